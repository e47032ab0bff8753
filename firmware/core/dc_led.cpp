#include "dc_led.h"

namespace devcore {

namespace {

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

// Case-insensitive comparison of s[0..len) with a lower-case NUL-terminated word.
bool equalsWord(const char* s, size_t len, const char* word) {
  size_t i = 0;
  for (; i < len; i++) {
    if (word[i] == '\0' || lower(s[i]) != word[i]) return false;
  }
  return word[i] == '\0';
}

}  // namespace

LedCommand parseLedCommand(const char* payload, size_t len) {
  if (payload == nullptr) return LedCommand::Invalid;
  size_t begin = 0, end = len;
  while (begin < end && isSpace(payload[begin])) begin++;
  while (end > begin && isSpace(payload[end - 1])) end--;
  const char* s = payload + begin;
  const size_t n = end - begin;

  if (equalsWord(s, n, "on") || equalsWord(s, n, "1")) return LedCommand::On;
  if (equalsWord(s, n, "off") || equalsWord(s, n, "0")) return LedCommand::Off;
  if (equalsWord(s, n, "toggle")) return LedCommand::Toggle;
  return LedCommand::Invalid;
}

}  // namespace devcore
