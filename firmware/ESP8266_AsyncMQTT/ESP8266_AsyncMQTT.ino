// ESP8266 MQTT demo device for caddy-mqtt: plain MQTT (port 1883) with AsyncMQTT_Generic.
//
// All behaviour (when to connect, what to publish, backoff, LED commands, date format) lives
// in the portable core (firmware/core, installed as the CaddyMqttDeviceCore library) and is
// unit-tested on the host and on the lx106 CPU under QEMU. This file only connects the core
// to Wi-Fi, SNTP, the MQTT library and the LED pin. See firmware/README.md.
//
// Written as plain C++ (explicit #include <Arduino.h>, functions defined before use) so it
// compiles the same with the Arduino IDE, PlatformIO and the stub check in `make check`.
#include <Arduino.h>
#include <ESP8266WiFi.h>
#include <time.h>

#if __has_include("config.h")
#include "config.h"
#else
#error "Copy config.example.h to config.h (same folder) and fill in Wi-Fi and broker settings."
#endif

#include <AsyncMqtt_Generic.h>
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

// The ESP8266's hardware random number generator (jitter for ticks and reconnects).
static uint32_t hardwareRandom(void*) { return ESP.random(); }

static devcore::DeviceCore core(kTopics, devcore::Timing{},
                                devcore::RandomSource{hardwareRandom, nullptr},
                                UTC_OFFSET_MINUTES);
static AsyncMqttClient mqtt;

static void setLed(bool on) { digitalWrite(LED_PIN, (on != (LED_ACTIVE_LOW != 0)) ? HIGH : LOW); }

static void execute(const devcore::Action& a) {
  switch (a.kind) {
    case devcore::ActionKind::None:
      break;
    case devcore::ActionKind::Connect:
      Serial.printf("mqtt: connecting to %s:%d\n", MQTT_HOST, MQTT_PORT);
      mqtt.connect();
      break;
    case devcore::ActionKind::Disconnect:
      Serial.println("mqtt: connect timed out, aborting");
      mqtt.disconnect(true);
      break;
    case devcore::ActionKind::Subscribe:
      Serial.printf("mqtt: subscribe %s\n", a.topic);
      mqtt.subscribe(a.topic, a.qos);
      break;
    case devcore::ActionKind::Publish:
      Serial.printf("mqtt: publish %s %s\n", a.topic, a.payload);
      mqtt.publish(a.topic, a.qos, a.retain, a.payload, strlen(a.payload));
      break;
    case devcore::ActionKind::SetLed:
      Serial.printf("led: %s\n", a.ledOn ? "on" : "off");
      setLed(a.ledOn);
      break;
  }
}

// AsyncMQTT_Generic calls these from the TCP stack's context. On the ESP8266 that context
// never preempts loop() (the SDK is cooperative), so calling into the core here is safe.
static void onMqttConnect(bool sessionPresent) {
  Serial.printf("mqtt: connected (session present: %d)\n", sessionPresent ? 1 : 0);
  core.onConnected(millis());
}

static void onMqttDisconnect(AsyncMqttClientDisconnectReason reason) {
  Serial.printf("mqtt: disconnected, reason %d\n", static_cast<int>(reason));
  core.onDisconnected(millis());
  Serial.printf("mqtt: retry in %lu ms\n", static_cast<unsigned long>(core.lastRetryDelayMs()));
}

static void onMqttMessage(char* topic, char* payload, AsyncMqttClientMessageProperties properties,
                          size_t len, size_t index, size_t total) {
  (void)properties;
  // Large payloads arrive in pieces; a command is a few bytes, so only whole messages count.
  if (index != 0 || len != total) return;
  switch (core.onMessage(topic, payload, len)) {
    case devcore::MessageKind::Pub:
      Serial.printf("mqtt: message on %s: %.*s\n", topic, static_cast<int>(len), payload);
      break;
    case devcore::MessageKind::LedInvalid:
      Serial.printf("mqtt: ignoring LED command %.*s\n", static_cast<int>(len), payload);
      break;
    case devcore::MessageKind::LedCommand:
    case devcore::MessageKind::Other:
      break;
  }
}

void setup() {
  Serial.begin(115200);
  Serial.println();
  Serial.println("caddy-mqtt ESP8266 demo (AsyncMQTT_Generic, plain MQTT)");
  pinMode(LED_PIN, OUTPUT);

  WiFi.mode(WIFI_STA);
  WiFi.persistent(false);  // do not rewrite the flash with the same credentials on every boot
  WiFi.setAutoReconnect(true);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);

  // UTC from SNTP; the core applies UTC_OFFSET_MINUTES when formatting.
  configTime(0, 0, NTP_SERVER_1, NTP_SERVER_2);

  mqtt.onConnect(onMqttConnect);
  mqtt.onDisconnect(onMqttDisconnect);
  mqtt.onMessage(onMqttMessage);
  mqtt.setServer(MQTT_HOST, MQTT_PORT);
  mqtt.setClientId(MQTT_CLIENT_ID);
  if (strlen(MQTT_USERNAME) > 0) mqtt.setCredentials(MQTT_USERNAME, MQTT_PASSWORD);
  // If the device vanishes, the broker publishes the retained "offline" for it.
  mqtt.setWill(kTopics.status, 1, true, devcore::kStatusOffline);
  mqtt.setKeepAlive(30);

  core.begin(millis());
}

void loop() {
  core.setNetworkUp(WiFi.status() == WL_CONNECTED);
  const uint32_t now = millis();
  const int64_t unixTime = static_cast<int64_t>(time(nullptr));
  for (devcore::Action a = core.poll(now, unixTime); a.kind != devcore::ActionKind::None;
       a = core.poll(now, unixTime)) {
    execute(a);
  }
  delay(10);  // yields to the Wi-Fi stack; 10 ms is far below any interval the core uses
}
