// The device schedule: boot delay, connect sequence, ticks, millis() wrap-around, backoff,
// connect timeout, LED commands.
#include "../../core/device_core.h"

#include <stdio.h>
#include <string.h>

#include "harness.h"

using namespace devcore;

namespace {

constexpr int64_t kNow = 1795687852;  // 2026-11-26T10:10:52Z, a synchronised clock
constexpr uint32_t kZero = 0;

uint32_t constantNext(void* context) { return *static_cast<const uint32_t*>(context); }

// Random source returning 0: ticks every tickMinMs, backoff at the lower bound.
const RandomSource kRandomZero{constantNext, const_cast<uint32_t*>(&kZero)};

const char* kindName(ActionKind k) {
  switch (k) {
    case ActionKind::None: return "None";
    case ActionKind::Connect: return "Connect";
    case ActionKind::Disconnect: return "Disconnect";
    case ActionKind::Subscribe: return "Subscribe";
    case ActionKind::Publish: return "Publish";
    case ActionKind::SetLed: return "SetLed";
  }
  return "?";
}

bool expectKind(const Action& a, ActionKind want, int line) {
  if (a.kind == want) {
    g_passed++;
    return true;
  }
  g_failed++;
  printf("FAIL %s:%d: action %s, want %s\n", __FILE__, line, kindName(a.kind), kindName(want));
  return false;
}
#define EXPECT_KIND(action, kind) expectKind((action), ActionKind::kind, __LINE__)

void expectPublish(const Action& a, const char* topic, const char* payload, int qos, bool retain,
                   int line) {
  if (!expectKind(a, ActionKind::Publish, line)) return;
  checkEqStr(a.topic, topic, "topic", __FILE__, line);
  checkEqStr(a.payload, payload, "payload", __FILE__, line);
  checkEqInt(a.qos, qos, "qos", __FILE__, line);
  checkEqInt(a.retain, retain, "retain", __FILE__, line);
}
#define EXPECT_PUBLISH(action, topic, payload, qos, retain) \
  expectPublish((action), (topic), (payload), (qos), (retain), __LINE__)

const Topics& T = kDefaultTopics;

// A core that has booted at `bootMs`, set its LED, and is waiting for the start delay.
void boot(DeviceCore& core, uint32_t bootMs) {
  core.begin(bootMs);
  core.setNetworkUp(true);
  const Action a = core.poll(bootMs, kNow);
  EXPECT_KIND(a, SetLed);
  CHECK(!a.ledOn);
}

// Drains the actions queued by onConnected (checked in testConnectSequence).
void drain(DeviceCore& core, uint32_t nowMs) {
  for (int i = 0; i < 20 && core.poll(nowMs, kNow).kind != ActionKind::None; i++) {
  }
}

// Boots at 0, connects at 30 s, drains the connect sequence. Returns the connect time.
uint32_t connected(DeviceCore& core) {
  boot(core, 0);
  EXPECT_KIND(core.poll(30000, kNow), Connect);
  core.onConnected(30100);
  drain(core, 30100);
  return 30100;
}

void testBootDelay() {
  DeviceCore core(T, Timing{}, kRandomZero);
  CHECK(core.poll(0, kNow).kind == ActionKind::None);  // before begin(): nothing
  boot(core, 1000);
  EXPECT_KIND(core.poll(1000, kNow), None);
  EXPECT_KIND(core.poll(30999, kNow), None);
  EXPECT_KIND(core.poll(31000, kNow), Connect);
  CHECK(core.state() == ConnState::Connecting);
  EXPECT_KIND(core.poll(31001, kNow), None);  // one Connect per attempt
}

void testWaitsForNetwork() {
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  core.setNetworkUp(false);
  EXPECT_KIND(core.poll(30000, kNow), None);
  EXPECT_KIND(core.poll(45000, kNow), None);
  core.setNetworkUp(true);
  EXPECT_KIND(core.poll(45001, kNow), Connect);
}

void testLongOutageAcrossWrap() {
  // Wi-Fi down for more than 2^31 ms (24.8 days): the start deadline is then "in the future"
  // by the wrap-safe comparison, but the due flag latched on the earlier poll.
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  core.setNetworkUp(false);
  EXPECT_KIND(core.poll(30000, kNow), None);
  core.setNetworkUp(true);
  EXPECT_KIND(core.poll(0x80000000u + 40000u, kNow), Connect);
}

void testBootAcrossWrap() {
  // Boot 10 s before millis() wraps: the connect is due 20 s after the wrap. A naive
  // `now >= deadline` would connect at once (0xffffffff >= 20000).
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0xffffffffu - 9999u);
  EXPECT_KIND(core.poll(0xffffffffu, kNow), None);
  EXPECT_KIND(core.poll(0, kNow), None);
  EXPECT_KIND(core.poll(19999, kNow), None);
  EXPECT_KIND(core.poll(20000, kNow), Connect);
}

void testConnectSequence() {
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  EXPECT_KIND(core.poll(30000, kNow), Connect);
  EXPECT_KIND(core.poll(30050, kNow), None);  // nothing until the library reports
  core.onConnected(30100);
  CHECK(core.state() == ConnState::Connected);
  EXPECT_PUBLISH(core.poll(30100, kNow), T.status, "online", 1, true);
  Action a = core.poll(30100, kNow);
  if (EXPECT_KIND(a, Subscribe)) {
    CHECK_STR(a.topic, T.pub);
    CHECK_EQ(a.qos, 1);
  }
  a = core.poll(30100, kNow);
  if (EXPECT_KIND(a, Subscribe)) CHECK_STR(a.topic, T.ledSet);
  EXPECT_PUBLISH(core.poll(30100, kNow), T.pub, "test1", 0, false);
  EXPECT_PUBLISH(core.poll(30100, kNow), T.pub, "test2", 1, false);
  EXPECT_PUBLISH(core.poll(30100, kNow), T.pub, "test3", 2, false);
  EXPECT_PUBLISH(core.poll(30100, kNow), T.ledState, "off", 1, true);
  EXPECT_KIND(core.poll(30100, kNow), None);
  CHECK_STR(kStatusOffline, "offline");
}

void testTicks() {
  // Scripted intervals: 0 -> 10 s, 20000 -> 30 s, 20001 -> wraps to 10 s, 5000 -> 15 s.
  const uint32_t script[] = {0, 20000, 20001, 5000};
  ScriptedRandom sr{script, 4, 0, 0};
  DeviceCore core(T, Timing{}, RandomSource{scriptedRandomNext, &sr});
  const uint32_t c = connected(core);

  EXPECT_KIND(core.poll(c + 19999, kNow), None);
  EXPECT_PUBLISH(core.poll(c + 20000, kNow), T.tick, "2026-11-26T10:10:52Z", 0, false);
  EXPECT_KIND(core.poll(c + 20000, kNow), None);  // one tick per due time

  uint32_t t = c + 20000;
  const uint32_t gaps[] = {10000, 30000, 10000, 15000};
  for (uint32_t gap : gaps) {
    EXPECT_KIND(core.poll(t + gap - 1, kNow), None);
    EXPECT_PUBLISH(core.poll(t + gap, kNow + 1), T.tick, "2026-11-26T10:10:53Z", 0, false);
    t += gap;
  }
}

// Many ticks with a pseudo-random sequence: every gap within [10 s, 30 s].
uint32_t lcgNext(void* context) {
  uint32_t* s = static_cast<uint32_t*>(context);
  *s = *s * 1664525u + 1013904223u;
  return *s;
}

void testTickIntervalsRandom() {
  uint32_t seed = 12345, mirror = 12345;
  DeviceCore core(T, Timing{}, RandomSource{lcgNext, &seed});
  const uint32_t c = connected(core);
  EXPECT_KIND(core.poll(c + 20000, kNow), Publish);
  uint32_t t = c + 20000;
  uint32_t bad = 0, shortest = 0xffffffffu, longest = 0;
  for (int i = 0; i < 300; i++) {
    const uint32_t gap = 10000 + lcgNext(&mirror) % 20001;
    shortest = gap < shortest ? gap : shortest;
    longest = gap > longest ? gap : longest;
    if (core.poll(t + 9999, kNow).kind != ActionKind::None) bad++;
    if (core.poll(t + gap - 1, kNow).kind != ActionKind::None) bad++;
    if (core.poll(t + gap, kNow).kind != ActionKind::Publish) bad++;
    t += gap;
  }
  CHECK_EQ(bad, 0);
  CHECK(shortest >= 10000 && longest <= 30000 && longest - shortest > 10000);
}

void testTickAcrossWrap() {
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0xffffffffu - 60000u);
  EXPECT_KIND(core.poll(0xffffffffu - 30000u, kNow), Connect);
  const uint32_t c = 0xffffffffu - 9999u;  // first tick due at 10000 after the wrap
  core.onConnected(c);
  drain(core, c);
  EXPECT_KIND(core.poll(0xffffffffu, kNow), None);
  EXPECT_KIND(core.poll(9999, kNow), None);
  EXPECT_KIND(core.poll(10000, kNow), Publish);
  EXPECT_KIND(core.poll(19999, kNow), None);
  EXPECT_KIND(core.poll(20000, kNow), Publish);
}

void testClockNotSet() {
  DeviceCore core(T, Timing{}, kRandomZero);
  const uint32_t c = connected(core);
  EXPECT_KIND(core.poll(c + 20000, 12), None);  // SNTP has not answered: skip, do not lie
  CHECK_EQ(core.ticksSkipped(), 1);
  EXPECT_KIND(core.poll(c + 29999, kNow), None);  // the skipped tick still set the next one
  EXPECT_PUBLISH(core.poll(c + 30000, kNow), T.tick, "2026-11-26T10:10:52Z", 0, false);
}

void testUtcOffset() {
  DeviceCore core(T, Timing{}, kRandomZero, 60);
  const uint32_t c = connected(core);
  EXPECT_PUBLISH(core.poll(c + 20000, kNow), T.tick, "2026-11-26T11:10:52+01:00", 0, false);
}

void testBackoffOnFailures() {
  Timing timing;  // base 2 s, cap 120 s; random 0 -> half the ceiling
  DeviceCore core(T, timing, kRandomZero);
  boot(core, 0);
  uint32_t now = 30000;
  EXPECT_KIND(core.poll(now, kNow), Connect);
  const uint32_t want[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
  for (uint32_t delay : want) {
    now += 500;
    core.onDisconnected(now);  // the attempt failed (refused, DNS, TCP)
    CHECK(core.state() == ConnState::WaitRetry);
    CHECK_EQ(core.lastRetryDelayMs(), delay);
    EXPECT_KIND(core.poll(now + delay - 1, kNow), None);
    now += delay;
    EXPECT_KIND(core.poll(now, kNow), Connect);
  }
}

void testBackoffResetsOnlyWhenStable() {
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  uint32_t now = 30000;
  EXPECT_KIND(core.poll(now, kNow), Connect);
  // Accepted, then dropped after 1 s, three times: the delays keep growing.
  const uint32_t flapping[] = {1000, 2000, 4000};
  for (uint32_t delay : flapping) {
    core.onConnected(now);
    drain(core, now);
    now += 1000;
    core.onDisconnected(now);
    CHECK_EQ(core.lastRetryDelayMs(), delay);
    now += delay;
    EXPECT_KIND(core.poll(now, kNow), Connect);
  }
  // A connection that lasts the stable time resets it to the base.
  core.onConnected(now);
  drain(core, now);
  now += 60000;
  core.onDisconnected(now);
  CHECK_EQ(core.lastRetryDelayMs(), 1000);
}

void testStableLatchedAcrossWrap() {
  // Connected for longer than 2^31 ms: polls latch "stable", so the disconnect resets the
  // backoff even though the wrap-safe comparison alone would say "not yet".
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  EXPECT_KIND(core.poll(30000, kNow), Connect);
  core.onDisconnected(30001);  // one failure: the next delay would be 2000
  EXPECT_KIND(core.poll(31001, kNow), Connect);
  core.onConnected(31001);
  drain(core, 100000);
  core.onDisconnected(31001u + 60000u + 0x80000000u + 5);  // "not reached" without the latch
  CHECK_EQ(core.lastRetryDelayMs(), 1000);
}

void testConnectTimeout() {
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  EXPECT_KIND(core.poll(30000, kNow), Connect);
  EXPECT_KIND(core.poll(59999, kNow), None);
  EXPECT_KIND(core.poll(60000, kNow), Disconnect);
  CHECK(core.state() == ConnState::WaitRetry);
  CHECK_EQ(core.lastRetryDelayMs(), 1000);
  core.onDisconnected(60010);  // the library's late report of the aborted attempt: ignored
  CHECK_EQ(core.lastRetryDelayMs(), 1000);
  EXPECT_KIND(core.poll(60999, kNow), None);
  EXPECT_KIND(core.poll(61000, kNow), Connect);
}

void testDisconnectDropsQueuedWork() {
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  EXPECT_KIND(core.poll(30000, kNow), Connect);
  core.onConnected(30000);
  EXPECT_KIND(core.poll(30000, kNow), Publish);  // "online"; the rest is still queued
  core.onDisconnected(30001);
  EXPECT_KIND(core.poll(30002, kNow), None);     // nothing is sent while disconnected
  EXPECT_KIND(core.poll(31001, kNow), Connect);
  core.onConnected(31001);
  EXPECT_PUBLISH(core.poll(31001, kNow), T.status, "online", 1, true);  // full sequence again
}

void testLedCommands() {
  DeviceCore core(T, Timing{}, kRandomZero);
  const uint32_t c = connected(core);

  const char on[] = " ON\r\n";
  CHECK(core.onMessage(T.ledSet, on, strlen(on)) == MessageKind::LedCommand);
  Action a = core.poll(c + 1, kNow);
  if (EXPECT_KIND(a, SetLed)) CHECK(a.ledOn);
  EXPECT_PUBLISH(core.poll(c + 1, kNow), T.ledState, "on", 1, true);
  EXPECT_KIND(core.poll(c + 1, kNow), None);
  CHECK(core.ledOn());

  CHECK(core.onMessage(T.ledSet, "toggle", 6) == MessageKind::LedCommand);
  a = core.poll(c + 2, kNow);
  if (EXPECT_KIND(a, SetLed)) CHECK(!a.ledOn);
  EXPECT_PUBLISH(core.poll(c + 2, kNow), T.ledState, "off", 1, true);

  // Repeating the current state still answers with the state (the sender waits for it).
  CHECK(core.onMessage(T.ledSet, "0", 1) == MessageKind::LedCommand);
  EXPECT_KIND(core.poll(c + 3, kNow), SetLed);
  EXPECT_PUBLISH(core.poll(c + 3, kNow), T.ledState, "off", 1, true);

  CHECK(core.onMessage(T.ledSet, "blink", 5) == MessageKind::LedInvalid);
  EXPECT_KIND(core.poll(c + 4, kNow), None);
  CHECK(!core.ledOn());

  CHECK(core.onMessage(T.pub, "test1", 5) == MessageKind::Pub);
  CHECK(core.onMessage("some/other/topic", "on", 2) == MessageKind::Other);
  CHECK(core.onMessage(T.ledState, "on", 2) == MessageKind::Other);  // our own state echo
  CHECK(core.onMessage(nullptr, "on", 2) == MessageKind::Other);
  CHECK(!core.ledOn());

  // The state survives a reconnect and is re-published (retained) after it.
  CHECK(core.onMessage(T.ledSet, "1", 1) == MessageKind::LedCommand);
  drain(core, c + 5);
  core.onDisconnected(c + 6);
  EXPECT_KIND(core.poll(c + 1006, kNow), Connect);
  core.onConnected(c + 1006);
  Action last;
  for (int i = 0; i < 20; i++) {
    const Action next = core.poll(c + 1006, kNow);
    if (next.kind == ActionKind::None) break;
    last = next;
  }
  EXPECT_PUBLISH(last, T.ledState, "on", 1, true);
}

void testLedBeforeConnect() {
  // A command can only arrive while connected, but if the glue calls onMessage early the LED
  // still switches and the state is published once connected.
  DeviceCore core(T, Timing{}, kRandomZero);
  boot(core, 0);
  core.onMessage(T.ledSet, "on", 2);
  Action a = core.poll(1, kNow);
  if (EXPECT_KIND(a, SetLed)) CHECK(a.ledOn);
  EXPECT_KIND(core.poll(2, kNow), None);  // no publish while not connected
}

}  // namespace

void testDeviceCore() {
  testBootDelay();
  testWaitsForNetwork();
  testLongOutageAcrossWrap();
  testBootAcrossWrap();
  testConnectSequence();
  testTicks();
  testTickIntervalsRandom();
  testTickAcrossWrap();
  testClockNotSet();
  testUtcOffset();
  testBackoffOnFailures();
  testBackoffResetsOnlyWhenStable();
  testStableLatchedAcrossWrap();
  testConnectTimeout();
  testDisconnectDropsQueuedWork();
  testLedCommands();
  testLedBeforeConnect();
}
