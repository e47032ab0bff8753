// Stub of libraries/ESP8266WiFi/src/ESP8266WiFi.h and the ESP8266WiFi{Generic,STA}.h parts the
// sketches use (declarations only).
#pragma once

#include "Arduino.h"
#include "IPAddress.h"
#include "WiFiClient.h"

// include/wl_definitions.h
typedef enum {
  WL_NO_SHIELD = 255,
  WL_IDLE_STATUS = 0,
  WL_NO_SSID_AVAIL = 1,
  WL_SCAN_COMPLETED = 2,
  WL_CONNECTED = 3,
  WL_CONNECT_FAILED = 4,
  WL_CONNECTION_LOST = 5,
  WL_WRONG_PASSWORD = 6,
  WL_DISCONNECTED = 7
} wl_status_t;

// ESP8266WiFiType.h
typedef enum WiFiMode { WIFI_OFF = 0, WIFI_STA = 1, WIFI_AP = 2, WIFI_AP_STA = 3 } WiFiMode_t;

class ESP8266WiFiClass {
 public:
  // ESP8266WiFiGeneric
  bool mode(WiFiMode_t);
  static void persistent(bool persistent);
  // ESP8266WiFiSTA
  wl_status_t begin(const char* ssid, const char* passphrase = nullptr, int32_t channel = 0,
                    const uint8_t* bssid = nullptr, bool connect = true);
  bool setAutoReconnect(bool autoReconnect);
  bool isConnected();
  wl_status_t status();
  IPAddress localIP();
  bool hostname(const char* aHostname);
};
extern ESP8266WiFiClass WiFi;
