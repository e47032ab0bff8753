// Parsing of LED command payloads received on the command topic.
#pragma once

#include <stddef.h>

namespace devcore {

enum class LedCommand : unsigned char { Invalid, On, Off, Toggle };

// Accepts "on", "off", "1", "0", "toggle", case-insensitive, with surrounding ASCII
// whitespace (space, \t, \r, \n, \v, \f) ignored, so `mosquitto_pub -m "ON\n"` and web forms
// work. `payload` need not be NUL-terminated (MQTT payloads are not). Anything else,
// including an empty payload or embedded NUL bytes, is Invalid.
LedCommand parseLedCommand(const char* payload, size_t len);

// Payload of the retained state topic.
inline const char* ledStatePayload(bool on) { return on ? "on" : "off"; }

}  // namespace devcore
