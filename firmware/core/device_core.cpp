#include "device_core.h"

#include <string.h>

namespace devcore {

namespace {

Action publish(const char* topic, const char* payload, uint8_t qos, bool retain) {
  Action a;
  a.kind = ActionKind::Publish;
  a.topic = topic;
  a.payload = payload;
  a.qos = qos;
  a.retain = retain;
  return a;
}

Action subscribe(const char* topic, uint8_t qos) {
  Action a;
  a.kind = ActionKind::Subscribe;
  a.topic = topic;
  a.qos = qos;
  return a;
}

Action simple(ActionKind kind) {
  Action a;
  a.kind = kind;
  return a;
}

}  // namespace

DeviceCore::DeviceCore(const Topics& topics, const Timing& timing, const RandomSource& rng,
                       int32_t utcOffsetMinutes)
    : topics_(topics),
      timing_(timing),
      rng_(rng),
      backoff_(timing.backoffBaseMs, timing.backoffCapMs),
      utcOffsetMinutes_(utcOffsetMinutes) {
  tickPayload_[0] = '\0';
}

void DeviceCore::begin(uint32_t nowMs) {
  state_ = ConnState::WaitStart;
  connectAtMs_ = nowMs + timing_.mqttStartDelayMs;
  connectDue_ = false;
  backoff_.reset();
  // Drive the LED pin to the known initial state (off) on the first poll.
  pending_ = kSetLed;
}

void DeviceCore::onConnected(uint32_t nowMs) {
  state_ = ConnState::Connected;
  connectedAtMs_ = nowMs;
  stable_ = false;
  nextTickMs_ = nowMs + timing_.tickStartDelayMs;
  pending_ |= kOnConnect;
}

void DeviceCore::onDisconnected(uint32_t nowMs) {
  // A library may report the same loss twice (or a failure after our own timeout); only the
  // first report of a live or pending connection schedules a retry.
  if (state_ != ConnState::Connected && state_ != ConnState::Connecting) return;
  if (state_ == ConnState::Connected &&
      (stable_ || deadlineReached(nowMs, connectedAtMs_ + timing_.stableConnectionMs))) {
    backoff_.reset();
  }
  scheduleRetry(nowMs);
}

void DeviceCore::scheduleRetry(uint32_t nowMs) {
  state_ = ConnState::WaitRetry;
  pending_ &= (uint16_t)~kOnConnect;  // nothing can be sent; onConnected queues it again
  lastRetryDelayMs_ = backoff_.nextDelayMs(rng_);
  connectAtMs_ = nowMs + lastRetryDelayMs_;
  connectDue_ = false;
}

MessageKind DeviceCore::onMessage(const char* topic, const char* payload, size_t len) {
  if (topic == nullptr) return MessageKind::Other;
  if (strcmp(topic, topics_.ledSet) == 0) {
    switch (parseLedCommand(payload, len)) {
      case LedCommand::On: ledOn_ = true; break;
      case LedCommand::Off: ledOn_ = false; break;
      case LedCommand::Toggle: ledOn_ = !ledOn_; break;
      case LedCommand::Invalid: return MessageKind::LedInvalid;
    }
    // Publish the state even if it did not change: the command's sender is waiting for it.
    pending_ |= kSetLed | kPubLedState;
    return MessageKind::LedCommand;
  }
  if (strcmp(topic, topics_.pub) == 0) return MessageKind::Pub;
  return MessageKind::Other;
}

Action DeviceCore::nextPending() {
  // Lowest set bit first: that is the order of the Pending enum.
  const uint16_t bit = (uint16_t)(pending_ & (uint16_t)(0u - pending_));
  pending_ &= (uint16_t)~bit;
  switch (bit) {
    case kSetLed: {
      Action a = simple(ActionKind::SetLed);
      a.ledOn = ledOn_;
      return a;
    }
    case kPubOnline: return publish(topics_.status, kStatusOnline, 1, true);
    case kSubPub: return subscribe(topics_.pub, 1);
    case kSubLed: return subscribe(topics_.ledSet, 1);
    case kPubTest1: return publish(topics_.pub, "test1", 0, false);
    case kPubTest2: return publish(topics_.pub, "test2", 1, false);
    case kPubTest3: return publish(topics_.pub, "test3", 2, false);
    case kPubLedState: return publish(topics_.ledState, ledStatePayload(ledOn_), 1, true);
    default: return simple(ActionKind::None);
  }
}

Action DeviceCore::poll(uint32_t nowMs, int64_t unixSeconds) {
  // Local work first; it does not need the broker.
  if (pending_ & kSetLed) return nextPending();

  switch (state_) {
    case ConnState::Idle:
      return simple(ActionKind::None);

    case ConnState::WaitStart:
    case ConnState::WaitRetry:
      if (!connectDue_ && deadlineReached(nowMs, connectAtMs_)) connectDue_ = true;
      if (!connectDue_ || !networkUp_) return simple(ActionKind::None);
      state_ = ConnState::Connecting;
      connectDeadlineMs_ = nowMs + timing_.connectTimeoutMs;
      return simple(ActionKind::Connect);

    case ConnState::Connecting:
      if (!deadlineReached(nowMs, connectDeadlineMs_)) return simple(ActionKind::None);
      scheduleRetry(nowMs);
      return simple(ActionKind::Disconnect);

    case ConnState::Connected:
      break;
  }

  if (!stable_ && deadlineReached(nowMs, connectedAtMs_ + timing_.stableConnectionMs)) {
    stable_ = true;
  }
  if (pending_ != 0) return nextPending();

  // The tick deadline is at most tickMaxMs ahead and is checked on every poll while
  // connected, so the wrap-safe comparison cannot be fooled here.
  if (!deadlineReached(nowMs, nextTickMs_)) return simple(ActionKind::None);
  nextTickMs_ = nowMs + randomBetween(rng_, timing_.tickMinMs, timing_.tickMaxMs);
  if (unixSeconds < kMinValidUnixTime ||
      formatIso8601(unixSeconds, utcOffsetMinutes_, tickPayload_, sizeof tickPayload_) == 0) {
    ticksSkipped_++;
    return simple(ActionKind::None);
  }
  return publish(topics_.tick, tickPayload_, 0, false);
}

}  // namespace devcore
