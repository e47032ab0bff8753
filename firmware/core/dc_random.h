// Injected randomness for the device core.
#pragma once

#include <stdint.h>

namespace devcore {

// A source of 32-bit random numbers, passed in so tests are deterministic. On the ESP8266 the
// sketch passes the hardware RNG (ESP.random()); the host simulator passes a PRNG; tests pass
// a scripted sequence. A plain function pointer plus context (no std::function, no virtuals).
struct RandomSource {
  uint32_t (*next)(void* context);
  void* context;
};

// Uniform-enough integer in [lo, hi] (inclusive). The modulo bias is below 2^-12 for the
// ranges used here (at most ~2^20 values), irrelevant for jitter.
inline uint32_t randomBetween(const RandomSource& rng, uint32_t lo, uint32_t hi) {
  if (hi <= lo) return lo;
  const uint32_t span = hi - lo;
  const uint32_t r = rng.next(rng.context);
  return span == 0xffffffffu ? r : lo + r % (span + 1);
}

}  // namespace devcore
