// Stub of cores/esp8266/Print.h (declarations only).
#pragma once

#include <stddef.h>
#include <stdint.h>

class String;

class Print {
 public:
  virtual ~Print() {}
  virtual size_t write(uint8_t) = 0;
  size_t write(const char* str);
  virtual size_t write(const uint8_t* buffer, size_t size);
  size_t write(const char* buffer, size_t size);

  size_t printf(const char* format, ...) __attribute__((format(printf, 2, 3)));
  size_t print(const String&);
  size_t print(const char[]);
  size_t print(char);
  size_t print(int, int = 10);
  size_t print(unsigned int, int = 10);
  size_t print(long, int = 10);
  size_t print(unsigned long, int = 10);
  size_t println(const String& s);
  size_t println(const char[]);
  size_t println(char);
  size_t println(int, int = 10);
  size_t println(unsigned int, int = 10);
  size_t println(long, int = 10);
  size_t println(unsigned long, int = 10);
  size_t println(void);
  virtual void flush() {}
};
