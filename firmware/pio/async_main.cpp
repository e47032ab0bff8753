// PlatformIO entry for env:esp8266_async. PlatformIO only converts .ino files found directly
// in src_dir, and there is one folder per sketch (the Arduino IDE needs that), so this file
// compiles the sketch as plain C++ (it is written to be valid C++).
#include "../ESP8266_AsyncMQTT/ESP8266_AsyncMQTT.ino"
