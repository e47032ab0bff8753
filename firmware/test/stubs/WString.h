// Stub of cores/esp8266/WString.h (declarations only).
#pragma once

class String {
 public:
  String(const char* cstr = "");
  const char* c_str() const;
  unsigned int length() const;
};
