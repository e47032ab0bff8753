#include "dc_backoff.h"

namespace devcore {

Backoff::Backoff(uint32_t baseMs, uint32_t capMs)
    : baseMs_(baseMs == 0 ? 1 : baseMs), capMs_(capMs) {
  if (capMs_ < baseMs_) capMs_ = baseMs_;
}

uint32_t Backoff::currentCeilingMs() const {
  // Double step by step instead of computing base << attempt, which overflows (and is
  // undefined for attempt >= 32) long before a device gives up retrying.
  uint32_t ceiling = baseMs_;
  for (uint32_t i = 0; i < attempt_ && ceiling < capMs_; i++) {
    ceiling = ceiling > capMs_ / 2 ? capMs_ : ceiling * 2;
  }
  return ceiling < capMs_ ? ceiling : capMs_;
}

uint32_t Backoff::nextDelayMs(const RandomSource& rng) {
  const uint32_t ceiling = currentCeilingMs();
  if (ceiling < capMs_) attempt_++;  // no need to count further once capped
  return randomBetween(rng, ceiling - ceiling / 2, ceiling);
}

}  // namespace devcore
