// PlatformIO entry for env:esp8266_tls; see async_main.cpp.
#include "../ESP8266_TLS/ESP8266_TLS.ino"
