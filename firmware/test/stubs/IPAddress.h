// Stub of cores/esp8266/IPAddress.h (declarations only).
#pragma once

#include <stdint.h>

#include "WString.h"

class IPAddress {
 public:
  IPAddress();
  IPAddress(uint8_t first_octet, uint8_t second_octet, uint8_t third_octet, uint8_t fourth_octet);
  String toString() const;
  bool isSet() const;
};
