// Time helpers for the device core: wrap-safe millisecond deadlines and calendar dates.
//
// Freestanding C++17: only C headers, no heap, no exceptions, no function-local statics.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace devcore {

// True once `now` has reached `deadline` on a free-running 32-bit millisecond counter.
//
// millis() wraps every 2^32 ms (49.7 days). Comparing `now >= deadline` breaks around the
// wrap; comparing the unsigned difference is correct as long as the two instants are less
// than 2^31 ms (24.8 days) apart, which the core guarantees by latching "due" flags instead
// of waiting on a deadline indefinitely (see DeviceCore::poll).
inline bool deadlineReached(uint32_t now, uint32_t deadline) {
  return (uint32_t)(now - deadline) < 0x80000000u;
}

// A proleptic Gregorian calendar date and time of day (UTC unless an offset was applied).
struct CivilTime {
  int32_t year;    // e.g. 2106
  uint8_t month;   // 1..12
  uint8_t day;     // 1..31
  uint8_t hour;    // 0..23
  uint8_t minute;  // 0..59
  uint8_t second;  // 0..59 (Unix time has no leap seconds)
};

// Days since 1970-01-01 for a civil date (Howard Hinnant's days_from_civil; exact for every
// date in the int32 year range, including the 400/100/4-year leap rules).
int64_t daysFromCivil(int32_t year, uint32_t month, uint32_t day);

// Calendar date and time for Unix time in seconds. 64-bit input: the device must keep working
// past 2038-01-19 (int32 overflow) and 2106-02-07 (uint32 overflow).
CivilTime civilFromUnix(int64_t unixSeconds);

// Writes `unixSeconds` as ISO 8601, e.g. "2026-11-26T10:10:52Z", or with a fixed offset
// "2026-11-26T11:10:52+01:00" when utcOffsetMinutes != 0. Returns the string length, or 0
// (and writes "" if there is room) when the buffer is too small or the year is outside
// 0000..9999. kIso8601Size bytes always suffice.
constexpr size_t kIso8601Size = 26;  // "YYYY-MM-DDTHH:MM:SS+HH:MM" + NUL
size_t formatIso8601(int64_t unixSeconds, int32_t utcOffsetMinutes, char* out, size_t outSize);

// Unix time before this (2020-01-01T00:00:00Z) means "clock not set yet": an ESP8266 counts
// from 0 at boot until SNTP answers, and must not publish 1970 dates.
constexpr int64_t kMinValidUnixTime = 1577836800;

}  // namespace devcore
