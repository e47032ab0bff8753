// Calendar conversion and ISO 8601 formatting, including leap-year rules and dates past the
// 32-bit limits (2038 for int32, 2106 for uint32).
#include "../../core/dc_time.h"

#include <stdio.h>
#include <string.h>

#include "harness.h"

using namespace devcore;

namespace {

bool isLeap(int64_t y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

uint32_t daysInMonth(int64_t y, uint32_t m) {
  const uint8_t len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return (m == 2 && isLeap(y)) ? 29 : len[m - 1];
}

void checkFormat(int64_t unixSeconds, int32_t offset, const char* want, const char* expr,
                 int line) {
  char buf[kIso8601Size];
  const size_t n = formatIso8601(unixSeconds, offset, buf, sizeof buf);
  checkEqStr(buf, want, expr, __FILE__, line);
  checkEqInt((int64_t)n, (int64_t)strlen(want), expr, __FILE__, line);
}
#define CHECK_FORMAT(secs, offset, want) checkFormat((secs), (offset), (want), #secs, __LINE__)

void testDaysFromCivil() {
  CHECK_EQ(daysFromCivil(1970, 1, 1), 0);
  CHECK_EQ(daysFromCivil(1969, 12, 31), -1);
  CHECK_EQ(daysFromCivil(2000, 2, 29), 11016);
  CHECK_EQ(daysFromCivil(2000, 3, 1), 11017);
  CHECK_EQ(daysFromCivil(2100, 3, 1), 47541);
  CHECK_EQ(daysFromCivil(1900, 3, 1), -25508);
  CHECK_EQ(daysFromCivil(2040, 2, 29), 25626);
  CHECK_EQ(daysFromCivil(9999, 12, 31), 2932896);
}

void testKnownInstants() {
  CHECK_FORMAT(0, 0, "1970-01-01T00:00:00Z");
  CHECK_FORMAT(-1, 0, "1969-12-31T23:59:59Z");
  // 2000 is a leap year (divisible by 400).
  CHECK_FORMAT(951782400, 0, "2000-02-29T00:00:00Z");
  CHECK_FORMAT(951868799, 0, "2000-02-29T23:59:59Z");
  CHECK_FORMAT(951868800, 0, "2000-03-01T00:00:00Z");
  // 2100 is not (divisible by 100, not by 400): Feb 28 is followed by Mar 1.
  CHECK_FORMAT(4107542399, 0, "2100-02-28T23:59:59Z");
  CHECK_FORMAT(4107542400, 0, "2100-03-01T00:00:00Z");
  // 1900 neither.
  CHECK_FORMAT(-2203891200 - 1, 0, "1900-02-28T23:59:59Z");
  CHECK_FORMAT(1709186828, 0, "2024-02-29T06:07:08Z");
  CHECK_FORMAT(1795687852, 0, "2026-11-26T10:10:52Z");
  // The int32 overflow instant and past it.
  CHECK_FORMAT(2147483647, 0, "2038-01-19T03:14:07Z");
  CHECK_FORMAT(2147483648LL, 0, "2038-01-19T03:14:08Z");
  CHECK_FORMAT(2214131696LL, 0, "2040-02-29T12:34:56Z");
  // The uint32 overflow instant and past it.
  CHECK_FORMAT(4294967295LL, 0, "2106-02-07T06:28:15Z");
  CHECK_FORMAT(4294967296LL, 0, "2106-02-07T06:28:16Z");
  CHECK_FORMAT(253402300799LL, 0, "9999-12-31T23:59:59Z");

  const CivilTime t = civilFromUnix(4294967296LL);
  CHECK_EQ(t.year, 2106);
  CHECK_EQ(t.month, 2);
  CHECK_EQ(t.day, 7);
  CHECK_EQ(t.hour, 6);
  CHECK_EQ(t.minute, 28);
  CHECK_EQ(t.second, 16);
}

void testOffsetsAndLimits() {
  CHECK_FORMAT(1795687852, 60, "2026-11-26T11:10:52+01:00");
  CHECK_FORMAT(1795687852, -210, "2026-11-26T06:40:52-03:30");
  CHECK_FORMAT(1795687852, 330, "2026-11-26T15:40:52+05:30");
  // The offset can move the local date across a year (and a non-leap century) boundary.
  CHECK_FORMAT(4102443000LL, 60, "2100-01-01T00:30:00+01:00");
  CHECK_FORMAT(951868800, -60, "2000-02-29T23:00:00-01:00");

  char buf[kIso8601Size];
  CHECK_EQ(formatIso8601(0, 0, buf, 20), 0);  // needs 21 bytes with the NUL
  CHECK_STR(buf, "");
  CHECK_EQ(formatIso8601(0, 0, buf, 21), 20);
  CHECK_EQ(formatIso8601(0, 60, buf, 25), 0);  // needs 26
  CHECK_EQ(formatIso8601(0, 60, buf, 26), 25);
  CHECK_EQ(formatIso8601(253402300800LL, 0, buf, sizeof buf), 0);  // year 10000
  CHECK_EQ(formatIso8601(-62167219201LL, 0, buf, sizeof buf), 0);  // year -1
  CHECK_EQ(formatIso8601(0, 24 * 60, buf, sizeof buf), 0);         // not writable as +HH:MM
  CHECK_FORMAT(-62167219200LL, 0, "0000-01-01T00:00:00Z");
  CHECK_EQ(formatIso8601(253402300799LL, 60, buf, sizeof buf), 0);  // local year 10000
  // Extreme inputs are rejected without int64 overflow (UBSan would report it on the host).
  CHECK_EQ(formatIso8601(INT64_MAX, 60, buf, sizeof buf), 0);
  CHECK_EQ(formatIso8601(INT64_MIN, -60, buf, sizeof buf), 0);
  CHECK_EQ(formatIso8601(0, 0, nullptr, 10), 0);
}

// Every day from 1899 to 2200, against an independent leap rule: the calendar must advance
// by exactly one day each step and daysFromCivil must invert civilFromUnix.
void testEveryDay() {
  const int64_t first = daysFromCivil(1899, 1, 1);
  const int64_t last = daysFromCivil(2200, 12, 31);
  CivilTime prev = civilFromUnix(first * 86400 - 1);  // 1898-12-31T23:59:59
  int errors = 0;
  for (int64_t d = first; d <= last && errors < 5; d++) {
    const CivilTime t = civilFromUnix(d * 86400 + 86399);  // last second of the day
    bool ok = t.hour == 23 && t.minute == 59 && t.second == 59;
    ok = ok && daysFromCivil(t.year, t.month, t.day) == d;
    if (prev.day < daysInMonth(prev.year, prev.month)) {
      ok = ok && t.year == prev.year && t.month == prev.month && t.day == prev.day + 1;
    } else if (prev.month < 12) {
      ok = ok && t.year == prev.year && t.month == prev.month + 1 && t.day == 1;
    } else {
      ok = ok && t.year == prev.year + 1 && t.month == 1 && t.day == 1;
    }
    if (!ok) {  // report the first few failures; the sweep counts as one test below
      errors++;
      printf("FAIL day %d: %d-%d-%d after %d-%d-%d\n", (int)d, (int)t.year, t.month, t.day,
             (int)prev.year, prev.month, prev.day);
    }
    prev = t;
  }
  CHECK_EQ(errors, 0);
  CHECK_EQ(prev.year, 2200);
}

}  // namespace

void testTime() {
  testDaysFromCivil();
  testKnownInstants();
  testOffsetsAndLimits();
  testEveryDay();
}
