// Settings for the ESP8266_AsyncMQTT sketch (plain MQTT on port 1883).
//
// Copy this file to config.h in the same folder and edit it. config.h holds secrets: do not
// commit it (firmware/.gitignore already ignores it).
#pragma once

// Wi-Fi (2.4 GHz; the ESP8266 has no 5 GHz radio).
#define WIFI_SSID "your-ssid"
#define WIFI_PASSWORD "your-wifi-password"

// The broker: caddy-mqtt's plain MQTT listener, or any MQTT 3.1.1 broker.
#define MQTT_HOST "broker.example.net"
#define MQTT_PORT 1883
#define MQTT_USERNAME "esp8266"  // "" for none
#define MQTT_PASSWORD "change-me"
// Must be unique per device: the broker drops the older session when an id is reused.
#define MQTT_CLIENT_ID "esp8266-1"

// SNTP servers for the date/time ticks.
#define NTP_SERVER_1 "pool.ntp.org"
#define NTP_SERVER_2 "time.nist.gov"
// Offset added to UTC in the tick payload, in minutes (60 = "+01:00"). 0 gives "...Z".
// A fixed offset: daylight saving time is not applied.
#define UTC_OFFSET_MINUTES 0

// The on-board LED. Most ESP8266 boards (NodeMCU, Wemos D1 mini, ESP-12) light it when the
// pin is LOW.
#define LED_PIN LED_BUILTIN
#define LED_ACTIVE_LOW 1

// Topics. These defaults match the classic AsyncMqttClient example; with several devices,
// give each its own set (for example by putting MQTT_CLIENT_ID into the names).
// #define TOPIC_PUB "async-mqtt/ESP8266_Pub"
// #define TOPIC_TICK "async-mqtt/ESP8266_tic"
// #define TOPIC_LED_SET "async-mqtt/ESP8266/led/set"
// #define TOPIC_LED_STATE "async-mqtt/ESP8266/led/state"
// #define TOPIC_STATUS "async-mqtt/ESP8266/status"
