// ESP8266 MQTT demo device for caddy-mqtt: MQTT over TLS (port 8883) with a client
// certificate, using BearSSL WiFiClientSecure (ESP8266 core 3.x) and PubSubClient.
//
// Why not AsyncMQTT_Generic: it cannot do TLS on the ESP8266 (its header stops with #error).
// Why BearSSL: the older axTLS client has no client certificates and no CA validation.
//
// Same behaviour as ESP8266_AsyncMQTT (the portable core decides everything), with these
// differences in the glue:
//   - it connects only once SNTP has set the clock: certificates cannot be checked without it;
//   - PubSubClient publishes at QoS 0 only and subscribes at QoS 0 or 1, so the QoS the core
//     asks for is capped accordingly;
//   - PubSubClient's connect() blocks for the TLS handshake (several seconds with EC keys).
// Budget about 22 KB of heap for the TLS connection.
#include <Arduino.h>
#include <ESP8266WiFi.h>
#include <WiFiClientSecure.h>
#include <time.h>

#if __has_include("config.h")
#include "config.h"
#else
#error "Copy config.example.h to config.h (same folder) and fill in Wi-Fi, broker and certificates."
#endif

#include <PubSubClient.h>
#include <device_core.h>

#ifndef TOPIC_PUB
#define TOPIC_PUB "async-mqtt/ESP8266_Pub"
#endif
#ifndef TOPIC_TICK
#define TOPIC_TICK "async-mqtt/ESP8266_tic"
#endif
#ifndef TOPIC_LED_SET
#define TOPIC_LED_SET "async-mqtt/ESP8266/led/set"
#endif
#ifndef TOPIC_LED_STATE
#define TOPIC_LED_STATE "async-mqtt/ESP8266/led/state"
#endif
#ifndef TOPIC_STATUS
#define TOPIC_STATUS "async-mqtt/ESP8266/status"
#endif

// File-local helpers are `static` rather than in an anonymous namespace: the Arduino IDE
// generates prototypes for .ino functions and does not cope with namespaces.
static const devcore::Topics kTopics = {TOPIC_PUB, TOPIC_TICK, TOPIC_LED_SET, TOPIC_LED_STATE,
                                        TOPIC_STATUS};

static uint32_t hardwareRandom(void*) { return ESP.random(); }

static devcore::DeviceCore core(kTopics, devcore::Timing{},
                                devcore::RandomSource{hardwareRandom, nullptr},
                                UTC_OFFSET_MINUTES);

// Parsed once at start-up; BearSSL keeps pointers to them for every handshake.
static BearSSL::X509List trustAnchors(MQTT_CA_PEM);
static BearSSL::X509List clientCert(MQTT_CLIENT_CERT_PEM);
static BearSSL::PrivateKey clientKey(MQTT_CLIENT_KEY_PEM);
static BearSSL::WiFiClientSecure tls;
static PubSubClient mqtt(tls);
static bool mqttWasConnected = false;

static const char* optional(const char* s) { return (s != nullptr && s[0] != '\0') ? s : nullptr; }

static void setLed(bool on) { digitalWrite(LED_PIN, (on != (LED_ACTIVE_LOW != 0)) ? HIGH : LOW); }

static void connectMqtt() {
  Serial.printf("mqtt: connecting to %s:%d (TLS)\n", MQTT_HOST, MQTT_PORT);
  // Blocks for the TCP connect and the TLS handshake.
  const bool ok = mqtt.connect(MQTT_CLIENT_ID, optional(MQTT_USERNAME), optional(MQTT_PASSWORD),
                               kTopics.status, 1, true, devcore::kStatusOffline, true);
  if (ok) {
    Serial.println("mqtt: connected");
    mqttWasConnected = true;
    core.onConnected(millis());
    return;
  }
  char err[80];
  const int code = tls.getLastSSLError(err, sizeof err);
  Serial.printf("mqtt: connect failed, state %d, TLS error %d (%s)\n", mqtt.state(), code, err);
  core.onDisconnected(millis());
  Serial.printf("mqtt: retry in %lu ms\n", static_cast<unsigned long>(core.lastRetryDelayMs()));
}

static void execute(const devcore::Action& a) {
  switch (a.kind) {
    case devcore::ActionKind::None:
      break;
    case devcore::ActionKind::Connect:
      connectMqtt();
      break;
    case devcore::ActionKind::Disconnect:
      mqtt.disconnect();  // not reached in practice: connect() above is synchronous
      break;
    case devcore::ActionKind::Subscribe:
      Serial.printf("mqtt: subscribe %s\n", a.topic);
      mqtt.subscribe(a.topic, a.qos > 1 ? 1 : a.qos);
      break;
    case devcore::ActionKind::Publish:
      Serial.printf("mqtt: publish %s %s\n", a.topic, a.payload);
      mqtt.publish(a.topic, a.payload, a.retain);  // QoS 0: all PubSubClient can send
      break;
    case devcore::ActionKind::SetLed:
      Serial.printf("led: %s\n", a.ledOn ? "on" : "off");
      setLed(a.ledOn);
      break;
  }
}

// Called from inside mqtt.loop(), i.e. from loop(): no concurrency concerns.
static void onMqttMessage(char* topic, uint8_t* payload, unsigned int len) {
  const char* text = reinterpret_cast<const char*>(payload);
  switch (core.onMessage(topic, text, len)) {
    case devcore::MessageKind::Pub:
      Serial.printf("mqtt: message on %s: %.*s\n", topic, static_cast<int>(len), text);
      break;
    case devcore::MessageKind::LedInvalid:
      Serial.printf("mqtt: ignoring LED command %.*s\n", static_cast<int>(len), text);
      break;
    case devcore::MessageKind::LedCommand:
    case devcore::MessageKind::Other:
      break;
  }
}

void setup() {
  Serial.begin(115200);
  Serial.println();
  Serial.println("caddy-mqtt ESP8266 demo (PubSubClient over BearSSL TLS)");
  pinMode(LED_PIN, OUTPUT);

  WiFi.mode(WIFI_STA);
  WiFi.persistent(false);
  WiFi.setAutoReconnect(true);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  configTime(0, 0, NTP_SERVER_1, NTP_SERVER_2);

  tls.setTrustAnchors(&trustAnchors);
  tls.setClientECCert(&clientCert, &clientKey, BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN,
                      MQTT_CLIENT_CERT_ISSUER_KEY_TYPE);
  // Keep BearSSL's default 16 KB receive buffer: a smaller one needs the server to accept the
  // TLS max_fragment_length extension, which Go's crypto/tls (Caddy) does not implement.

  mqtt.setServer(MQTT_HOST, MQTT_PORT);
  mqtt.setCallback(onMqttMessage);
  mqtt.setKeepAlive(30);
  mqtt.setSocketTimeout(20);  // seconds; an EC handshake on an 80 MHz lx106 takes a few
  mqtt.setBufferSize(512);    // room for topic + payload of the largest message we handle

  core.begin(millis());
}

void loop() {
  const int64_t unixTime = static_cast<int64_t>(time(nullptr));
  // "Network up" for the core means "a connection can succeed": Wi-Fi joined and the clock
  // set, since certificate validity cannot be checked against 1970.
  core.setNetworkUp(WiFi.status() == WL_CONNECTED && unixTime >= devcore::kMinValidUnixTime);

  if (mqttWasConnected) {
    mqtt.loop();  // keepalive, incoming messages
    if (!mqtt.connected()) {
      mqttWasConnected = false;
      Serial.printf("mqtt: connection lost, state %d\n", mqtt.state());
      core.onDisconnected(millis());
    }
  }

  const uint32_t now = millis();
  for (devcore::Action a = core.poll(now, unixTime); a.kind != devcore::ActionKind::None;
       a = core.poll(millis(), unixTime)) {
    execute(a);
  }
  delay(10);
}
