// Backoff bounds and caps, random ranges, LED command parsing.
#include "../../core/dc_backoff.h"
#include "../../core/dc_led.h"
#include "../../core/dc_random.h"

#include <stdio.h>
#include <string.h>

#include "harness.h"

using namespace devcore;

namespace {

// Returns `value` every time.
uint32_t constantNext(void* context) { return *static_cast<uint32_t*>(context); }

void testRandomBetween() {
  uint32_t value = 0;
  const RandomSource rng{constantNext, &value};
  CHECK_EQ(randomBetween(rng, 10, 30), 10);
  value = 20;
  CHECK_EQ(randomBetween(rng, 10, 30), 30);
  value = 21;  // wraps around the 21 possible values
  CHECK_EQ(randomBetween(rng, 10, 30), 10);
  value = 0xffffffffu;
  CHECK_EQ(randomBetween(rng, 10, 30), 10 + 0xffffffffu % 21);
  CHECK_EQ(randomBetween(rng, 7, 7), 7);
  CHECK_EQ(randomBetween(rng, 9, 3), 9);  // empty range: the lower bound
  CHECK_EQ(randomBetween(rng, 0, 0xffffffffu), 0xffffffffu);  // full range, no overflow
}

void testBackoffCeilings() {
  Backoff b(1000, 10000);
  const uint32_t want[] = {1000, 2000, 4000, 8000, 10000, 10000, 10000};
  uint32_t zero = 0;
  const RandomSource rng{constantNext, &zero};
  for (uint32_t w : want) {
    CHECK_EQ(b.currentCeilingMs(), w);
    CHECK_EQ(b.nextDelayMs(rng), w / 2);  // random 0 -> the lower bound, half the ceiling
  }
  b.reset();
  CHECK_EQ(b.attempts(), 0);
  CHECK_EQ(b.currentCeilingMs(), 1000);

  // The upper bound: a random value equal to the span gives the ceiling itself.
  Backoff top(1000, 10000);
  for (uint32_t w : want) {
    uint32_t span = w / 2;
    const RandomSource r{constantNext, &span};
    CHECK_EQ(top.nextDelayMs(r), w);
  }
}

void testBackoffNoOverflow() {
  // Ceilings near 2^32 must cap, not wrap to small values.
  Backoff b(0x40000000u, 0xf0000000u);
  uint32_t zero = 0;
  const RandomSource rng{constantNext, &zero};
  CHECK_EQ(b.nextDelayMs(rng), 0x20000000u);
  CHECK_EQ(b.nextDelayMs(rng), 0x40000000u);
  CHECK_EQ(b.nextDelayMs(rng), 0x78000000u);
  for (int i = 0; i < 1000; i++) b.nextDelayMs(rng);
  CHECK_EQ(b.currentCeilingMs(), 0xf0000000u);

  // Odd ceilings: the lower bound rounds up, so the delay never drops under half.
  Backoff odd(3, 7);
  CHECK_EQ(odd.nextDelayMs(rng), 2);  // ceiling 3 -> [2, 3]
  CHECK_EQ(odd.nextDelayMs(rng), 3);  // ceiling 6 -> [3, 6]
  CHECK_EQ(odd.nextDelayMs(rng), 4);  // ceiling 7 (cap) -> [4, 7]

  // Nonsense configuration is clamped rather than dividing by zero or looping.
  Backoff zeroBase(0, 0);
  CHECK_EQ(zeroBase.currentCeilingMs(), 1);
}

void testLedParse() {
  struct Case {
    const char* payload;
    LedCommand want;
  };
  const Case cases[] = {
      {"on", LedCommand::On},          {"ON", LedCommand::On},
      {"On", LedCommand::On},          {"1", LedCommand::On},
      {" on ", LedCommand::On},        {"\ton\r\n", LedCommand::On},
      {"off", LedCommand::Off},        {"OFF", LedCommand::Off},
      {"0", LedCommand::Off},          {"\n 0 \v\f", LedCommand::Off},
      {"toggle", LedCommand::Toggle},  {"ToGgLe\n", LedCommand::Toggle},
      {"", LedCommand::Invalid},       {"   ", LedCommand::Invalid},
      {"o", LedCommand::Invalid},      {"of", LedCommand::Invalid},
      {"onn", LedCommand::Invalid},    {"offf", LedCommand::Invalid},
      {"toggles", LedCommand::Invalid}, {"1 0", LedCommand::Invalid},
      {"01", LedCommand::Invalid},     {"true", LedCommand::Invalid},
      {"o n", LedCommand::Invalid},    {"2", LedCommand::Invalid},
  };
  for (const Case& c : cases) {
    if (!CHECK(parseLedCommand(c.payload, strlen(c.payload)) == c.want)) {
      printf("  payload \"%s\"\n", c.payload);
    }
  }
  // MQTT payloads are not NUL-terminated: only `len` bytes count.
  CHECK(parseLedCommand("onXYZ", 2) == LedCommand::On);
  CHECK(parseLedCommand("offset", 3) == LedCommand::Off);
  // An embedded NUL is not whitespace.
  CHECK(parseLedCommand("on\0", 3) == LedCommand::Invalid);
  CHECK(parseLedCommand(nullptr, 0) == LedCommand::Invalid);
  CHECK_STR(ledStatePayload(true), "on");
  CHECK_STR(ledStatePayload(false), "off");
}

}  // namespace

void testBackoff() {
  testRandomBetween();
  testBackoffCeilings();
  testBackoffNoOverflow();
}

void testLed() { testLedParse(); }
