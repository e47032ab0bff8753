// A tiny test harness that runs the same way on the host and on the lx106 under QEMU:
// printf only (picolibc + semihosting there), no STL, no exceptions, no heap.
//
// Every CHECK counts as one test. Failures print file:line and the values; main() prints
// "N passed, M failed" as its last line and returns non-zero if anything failed.
#pragma once

#include <stddef.h>
#include <stdint.h>

extern int g_passed;
extern int g_failed;

bool checkTrue(bool ok, const char* expr, const char* file, int line);
bool checkEqInt(int64_t got, int64_t want, const char* expr, const char* file, int line);
bool checkEqStr(const char* got, const char* want, const char* expr, const char* file, int line);

#define CHECK(cond) checkTrue((cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ(got, want) \
  checkEqInt((int64_t)(got), (int64_t)(want), #got " == " #want, __FILE__, __LINE__)
#define CHECK_STR(got, want) checkEqStr((got), (want), #got " == " #want, __FILE__, __LINE__)

// A scripted random source: returns values[0], values[1], ... then `fallback` forever.
struct ScriptedRandom {
  const uint32_t* values;
  size_t count;
  size_t next;
  uint32_t fallback;
};
uint32_t scriptedRandomNext(void* context);

// The test groups, one per file.
void testTime();
void testBackoff();
void testLed();
void testDeviceCore();
