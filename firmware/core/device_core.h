// The device's behaviour, independent of Arduino, the MQTT library and the clock.
//
// The sketch (and the host simulator) are thin glue around this class:
//   setup():  core.begin(millis());
//   loop():   core.setNetworkUp(WiFi.status() == WL_CONNECTED);
//             for (Action a; (a = core.poll(millis(), time(nullptr))).kind != ActionKind::None;)
//               execute(a);          // connect, subscribe, publish, switch the LED, ...
//   MQTT library callbacks: core.onConnected(millis()), core.onDisconnected(millis()),
//             core.onMessage(topic, payload, len).
//
// Behaviour (times are Timing defaults):
//   - 30 s after boot, once the network is up, ask to connect.
//   - On connect: publish "online" (retained) to the status topic (the broker publishes the
//     retained "offline" will when the device vanishes), subscribe to the pub topic and the
//     LED command topic, publish test1 (QoS 0), test2 (QoS 1), test3 (QoS 2) to the pub topic,
//     publish the LED state (retained).
//   - 20 s after connect, publish the date/time to the tick topic, then again at random
//     intervals of 10..30 s, for as long as the connection lasts.
//   - On disconnect or a connect attempt that takes too long: reconnect after a capped
//     exponential backoff with jitter; the backoff resets only after a connection that stayed
//     up for Timing::stableConnectionMs (a broker that accepts and then drops the client must
//     not get a reconnect storm).
//   - LED command topic: "on"/"off"/"1"/"0"/"toggle" switch the LED; the new state is
//     published retained to the LED state topic.
//
// Freestanding C++17: C headers only, no heap, no exceptions, no RTTI, no function-local
// statics. All times are uint32 milliseconds from the caller's millis(); wrap-around safe.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "dc_backoff.h"
#include "dc_led.h"
#include "dc_random.h"
#include "dc_time.h"

namespace devcore {

struct Topics {
  const char* pub;       // "async-mqtt/ESP8266_Pub": test1..3 are published here; subscribed
  const char* tick;      // "async-mqtt/ESP8266_tic": date/time ticks
  const char* ledSet;    // "async-mqtt/ESP8266/led/set": commands in
  const char* ledState;  // "async-mqtt/ESP8266/led/state": retained "on"/"off" out
  const char* status;    // "async-mqtt/ESP8266/status": retained "online"/"offline" (LWT)
};

// The defaults the sketches use; the config header may override each one.
constexpr Topics kDefaultTopics = {
    "async-mqtt/ESP8266_Pub",     "async-mqtt/ESP8266_tic",       "async-mqtt/ESP8266/led/set",
    "async-mqtt/ESP8266/led/state", "async-mqtt/ESP8266/status",
};

constexpr const char* kStatusOnline = "online";
constexpr const char* kStatusOffline = "offline";  // the will payload

struct Timing {
  uint32_t mqttStartDelayMs = 30000;    // boot -> first connect
  uint32_t tickStartDelayMs = 20000;    // connect -> first tick
  uint32_t tickMinMs = 10000;           // random interval between ticks, inclusive bounds
  uint32_t tickMaxMs = 30000;
  uint32_t backoffBaseMs = 2000;        // first reconnect delay ceiling
  uint32_t backoffCapMs = 120000;       // largest reconnect delay ceiling
  uint32_t connectTimeoutMs = 30000;    // give up on an attempt (TLS EC handshakes take seconds)
  uint32_t stableConnectionMs = 60000;  // a connection this long resets the backoff
};

enum class ActionKind : uint8_t {
  None,        // nothing to do now
  Connect,     // start connecting to the broker (will: status topic, "offline", QoS 1, retained)
  Disconnect,  // abandon the current connection attempt (it timed out)
  Subscribe,   // topic, qos
  Publish,     // topic, payload, qos, retain
  SetLed,      // ledOn
};

// One step for the glue to carry out. `topic` and `payload` are NUL-terminated and stay
// valid until the next call to poll().
struct Action {
  ActionKind kind = ActionKind::None;
  const char* topic = nullptr;
  const char* payload = nullptr;
  uint8_t qos = 0;
  bool retain = false;
  bool ledOn = false;
};

enum class ConnState : uint8_t {
  Idle,        // before begin()
  WaitStart,   // waiting for the boot delay (and the network)
  Connecting,  // Connect was returned, waiting for onConnected/onDisconnected
  Connected,
  WaitRetry,   // waiting for the backoff delay (and the network)
};

enum class MessageKind : uint8_t {
  Other,       // a topic the core does not handle
  Pub,         // a message on the pub topic (including the device's own test1..3)
  LedCommand,  // a valid LED command: poll() will return SetLed and the state publish
  LedInvalid,  // something on the LED topic that is not a command; ignored
};

class DeviceCore {
 public:
  DeviceCore(const Topics& topics, const Timing& timing, const RandomSource& rng,
             int32_t utcOffsetMinutes = 0);

  void begin(uint32_t nowMs);
  void setNetworkUp(bool up) { networkUp_ = up; }
  void onConnected(uint32_t nowMs);
  void onDisconnected(uint32_t nowMs);
  MessageKind onMessage(const char* topic, const char* payload, size_t len);

  // The next thing to do at `nowMs`; call repeatedly until it returns ActionKind::None.
  // `unixSeconds` is the wall clock (time(nullptr)); values before kMinValidUnixTime mean
  // "not synchronised yet", and a tick that falls due then is skipped, not published.
  Action poll(uint32_t nowMs, int64_t unixSeconds);

  ConnState state() const { return state_; }
  bool ledOn() const { return ledOn_; }
  // Delay chosen at the last disconnect (for logging).
  uint32_t lastRetryDelayMs() const { return lastRetryDelayMs_; }
  uint32_t ticksSkipped() const { return ticksSkipped_; }

 private:
  // Work queued for the next polls, served in bit order. A bit set instead of a queue: each
  // item is idempotent ("make sure the LED state gets published"), so it never needs to be
  // queued twice, and the order after connect is fixed.
  enum Pending : uint16_t {
    kSetLed = 1u << 0,
    kPubOnline = 1u << 1,
    kSubPub = 1u << 2,
    kSubLed = 1u << 3,
    kPubTest1 = 1u << 4,
    kPubTest2 = 1u << 5,
    kPubTest3 = 1u << 6,
    kPubLedState = 1u << 7,
  };
  static constexpr uint16_t kOnConnect =
      kPubOnline | kSubPub | kSubLed | kPubTest1 | kPubTest2 | kPubTest3 | kPubLedState;

  Action nextPending();
  void scheduleRetry(uint32_t nowMs);

  Topics topics_;
  Timing timing_;
  RandomSource rng_;
  Backoff backoff_;
  int32_t utcOffsetMinutes_;

  ConnState state_ = ConnState::Idle;
  bool networkUp_ = false;
  bool ledOn_ = false;
  uint16_t pending_ = 0;

  // Wait* states: when to (re)connect. `connectDue_` latches once the deadline passes, so a
  // network outage longer than 24.8 days cannot make the wrap-safe comparison flip back.
  uint32_t connectAtMs_ = 0;
  bool connectDue_ = false;
  uint32_t connectDeadlineMs_ = 0;  // Connecting: give up at
  uint32_t connectedAtMs_ = 0;
  // Connected: when the connection has lasted stableConnectionMs; latched like connectDue_.
  bool stable_ = false;
  uint32_t nextTickMs_ = 0;
  uint32_t lastRetryDelayMs_ = 0;
  uint32_t ticksSkipped_ = 0;

  char tickPayload_[kIso8601Size];
};

}  // namespace devcore
