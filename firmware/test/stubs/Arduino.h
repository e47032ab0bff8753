// Declaration-only stub of the ESP8266 Arduino core's Arduino.h (core 3.1.x), for the sketch
// compile check. Only what the sketches use; signatures as in cores/esp8266/.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "Print.h"
#include "Stream.h"
#include "WString.h"


#define HIGH 0x1
#define LOW 0x0
#define INPUT 0x00
#define OUTPUT 0x01

// pins_arduino.h of the "nodemcu"/"d1_mini" variants.
#define LED_BUILTIN 2

typedef bool boolean;
typedef uint8_t byte;

void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t val);
int digitalRead(uint8_t pin);
unsigned long millis(void);
unsigned long micros(void);
void delay(unsigned long);
void yield(void);

void configTime(int timezone, int daylightOffset_sec, const char* server1,
                const char* server2 = nullptr, const char* server3 = nullptr);
void configTime(const char* tz, const char* server1, const char* server2 = nullptr,
                const char* server3 = nullptr);

// cores/esp8266/Esp.h
class EspClass {
 public:
  uint32_t getFreeHeap();
  uint32_t getChipId();
  uint8_t* random(uint8_t* resultArray, const size_t outputSizeBytes) const;
  uint32_t random() const;
  void restart();
};
extern EspClass ESP;

// cores/esp8266/HardwareSerial.h
class HardwareSerial : public Stream {
 public:
  void begin(unsigned long baud);
  int available() override;
  int read() override;
  int peek() override;
  size_t write(uint8_t) override;
  using Print::write;
};
extern HardwareSerial Serial;
