#include "dc_time.h"

namespace devcore {

namespace {

// Floor division and modulo for a positive divisor (C++ `/` truncates toward zero, which is
// wrong for instants before 1970).
int64_t floorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b < 0) ? q - 1 : q;
}

constexpr int64_t kYear0 = -62167219200;      // 0000-01-01T00:00:00Z
constexpr int64_t kYear9999End = 253402300799;  // 9999-12-31T23:59:59Z

char* put2(char* p, uint32_t v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
  return p + 2;
}

}  // namespace

// The algorithms count in 400-year "eras" of 146097 days starting on 0000-03-01, so that the
// leap day is the last day of each shifted year. See
// https://howardhinnant.github.io/date_algorithms.html for the derivation.
int64_t daysFromCivil(int32_t year, uint32_t month, uint32_t day) {
  const int64_t y = (int64_t)year - (month <= 2 ? 1 : 0);
  const int64_t era = floorDiv(y, 400);
  const uint32_t yoe = (uint32_t)(y - era * 400);                                // [0, 399]
  const uint32_t mp = month > 2 ? month - 3 : month + 9;                         // [0, 11]
  const uint32_t doy = (153 * mp + 2) / 5 + day - 1;                             // [0, 365]
  const uint32_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;                    // [0, 146096]
  return era * 146097 + (int64_t)doe - 719468;
}

CivilTime civilFromUnix(int64_t unixSeconds) {
  const int64_t days = floorDiv(unixSeconds, 86400);
  const uint32_t secOfDay = (uint32_t)(unixSeconds - days * 86400);  // [0, 86399]

  const int64_t z = days + 719468;  // days since 0000-03-01
  const int64_t era = floorDiv(z, 146097);
  const uint32_t doe = (uint32_t)(z - era * 146097);                              // [0, 146096]
  const uint32_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;     // [0, 399]
  const uint32_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                   // [0, 365]
  const uint32_t mp = (5 * doy + 2) / 153;                                        // [0, 11]

  CivilTime t;
  t.day = (uint8_t)(doy - (153 * mp + 2) / 5 + 1);
  t.month = (uint8_t)(mp < 10 ? mp + 3 : mp - 9);
  t.year = (int32_t)((int64_t)yoe + era * 400 + (t.month <= 2 ? 1 : 0));
  t.hour = (uint8_t)(secOfDay / 3600);
  t.minute = (uint8_t)(secOfDay / 60 % 60);
  t.second = (uint8_t)(secOfDay % 60);
  return t;
}

size_t formatIso8601(int64_t unixSeconds, int32_t utcOffsetMinutes, char* out, size_t outSize) {
  if (out == nullptr || outSize == 0) return 0;
  out[0] = '\0';
  // Offsets beyond +-23:59 cannot be written as +HH:MM (real ones are within +-14:00).
  if (utcOffsetMinutes <= -24 * 60 || utcOffsetMinutes >= 24 * 60) return 0;
  // Years 0000..9999 only, checked before adding the offset so that extreme inputs cannot
  // overflow int64 (a day of margin on both sides for the offset).
  if (unixSeconds < kYear0 - 86400 || unixSeconds > kYear9999End + 86400) return 0;

  const CivilTime t = civilFromUnix(unixSeconds + (int64_t)utcOffsetMinutes * 60);
  if (t.year < 0 || t.year > 9999) return 0;
  const size_t len = utcOffsetMinutes == 0 ? 20 : 25;
  if (outSize < len + 1) return 0;

  char* p = out;
  p = put2(p, (uint32_t)t.year / 100);
  p = put2(p, (uint32_t)t.year % 100);
  *p++ = '-';
  p = put2(p, t.month);
  *p++ = '-';
  p = put2(p, t.day);
  *p++ = 'T';
  p = put2(p, t.hour);
  *p++ = ':';
  p = put2(p, t.minute);
  *p++ = ':';
  p = put2(p, t.second);
  if (utcOffsetMinutes == 0) {
    *p++ = 'Z';
  } else {
    const uint32_t mag = (uint32_t)(utcOffsetMinutes < 0 ? -utcOffsetMinutes : utcOffsetMinutes);
    *p++ = utcOffsetMinutes < 0 ? '-' : '+';
    p = put2(p, mag / 60);
    *p++ = ':';
    p = put2(p, mag % 60);
  }
  *p = '\0';
  return (size_t)(p - out);
}

}  // namespace devcore
