// Capped exponential reconnect backoff with jitter.
#pragma once

#include <stdint.h>

#include "dc_random.h"

namespace devcore {

// Delay before reconnect attempt n (n = 0, 1, 2, ...):
//   ceiling(n) = min(cap, base * 2^n)
//   delay      = random in [ceiling/2, ceiling]       ("equal jitter")
// Why jitter: after a broker restart every device would otherwise reconnect in the same
// millisecond. Why only half of it random: a full-jitter delay can be ~0, which turns a
// refusing broker (bad password, ACL) into a tight reconnect loop.
class Backoff {
 public:
  Backoff(uint32_t baseMs, uint32_t capMs);

  // Delay for the next attempt; advances the attempt counter.
  uint32_t nextDelayMs(const RandomSource& rng);

  // The ceiling for the next attempt, without advancing (for logs and tests).
  uint32_t currentCeilingMs() const;

  void reset() { attempt_ = 0; }
  uint32_t attempts() const { return attempt_; }

 private:
  uint32_t baseMs_;
  uint32_t capMs_;
  uint32_t attempt_ = 0;
};

}  // namespace devcore
