// Settings for the ESP8266_TLS sketch (MQTT over TLS on port 8883 with a client certificate).
//
// Copy this file to config.h in the same folder and edit it. config.h holds the device's
// private key: do not commit it (firmware/.gitignore already ignores it).
#pragma once

#define WIFI_SSID "your-ssid"
#define WIFI_PASSWORD "your-wifi-password"

// Must match a name in the broker's certificate (the TLS client checks it).
#define MQTT_HOST "broker.example.net"
#define MQTT_PORT 8883
// With a client certificate the broker takes the identity from its CN; a username and
// password are optional on top. "" for none.
#define MQTT_USERNAME ""
#define MQTT_PASSWORD ""
#define MQTT_CLIENT_ID "esp8266-1"

// Certificates are checked against the clock: the sketch waits for SNTP before connecting.
#define NTP_SERVER_1 "pool.ntp.org"
#define NTP_SERVER_2 "time.nist.gov"
#define UTC_OFFSET_MINUTES 0

#define LED_PIN LED_BUILTIN
#define LED_ACTIVE_LOW 1

// The CA that signed the broker's certificate (trust anchor). For a broker with a public
// certificate (Let's Encrypt) this is the root, e.g. ISRG Root X1; for Caddy's internal CA,
// the root from Caddy's pki app. Validating against a CA, not pinning a fingerprint, keeps the
// device working when the broker's certificate is renewed.
static const char MQTT_CA_PEM[] = R"PEM(
-----BEGIN CERTIFICATE-----
...paste the CA certificate here...
-----END CERTIFICATE-----
)PEM";

// The device's certificate and P-256 private key, as written by `caddy mqtt cert` (or any
// private CA: openssl, step-ca). Its CN is the device identity the broker sees.
static const char MQTT_CLIENT_CERT_PEM[] = R"PEM(
-----BEGIN CERTIFICATE-----
...paste the device certificate here...
-----END CERTIFICATE-----
)PEM";

static const char MQTT_CLIENT_KEY_PEM[] = R"PEM(
-----BEGIN EC PRIVATE KEY-----
...paste the device private key here...
-----END EC PRIVATE KEY-----
)PEM";

// Key type of the CA that *issued* the client certificate: BR_KEYTYPE_EC for an EC CA
// (Caddy's pki app, `caddy mqtt cert`), BR_KEYTYPE_RSA for an RSA CA.
#define MQTT_CLIENT_CERT_ISSUER_KEY_TYPE BR_KEYTYPE_EC
