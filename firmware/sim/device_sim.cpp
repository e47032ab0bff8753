// Host "device simulator": the firmware's portable core (firmware/core) driven by the real
// clock, talking MQTT through libmosquitto (TCP, or TLS with a client certificate), so the
// device's behaviour can be tested against a real broker without an ESP8266.
//
// It plays the role of the .ino glue: feeds the core millis() and time(), executes the
// actions the core returns, and reports the MQTT library's events back to it. The LED is
// simulated (printed).
//
// Output: one line per event on stdout, flushed immediately, easy to parse:
//     <elapsed_ms> <event> [key=value ...] [payload=<rest of the line>]
// Events: start, connect, connect_failed, connected, disconnected, retry, abort, subscribe,
// publish, message, led, exit. Diagnostics go to stderr.
//
// Exit status: with --ticks N, 0 once N ticks were published and 1 if --max-runtime came
// first; without, 0 if a connection succeeded at least once. 2 for usage errors.
#include <errno.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/device_core.h"

namespace {

struct Options {
  const char* host = "127.0.0.1";
  int port = 0;  // 0: 1883, or 8883 with TLS
  const char* username = "";
  const char* password = "";
  const char* clientId = "esp8266-sim";
  const char* cafile = "";
  const char* certfile = "";
  const char* keyfile = "";
  const char* tlsVersion = "tlsv1.2";  // what the ESP8266's BearSSL speaks at most
  double timeScale = 1.0;
  double maxRuntimeSec = 300;
  long ticks = 0;  // exit after this many ticks (0: run until max runtime)
  uint32_t millisStart = 0;
  uint64_t seed = 0;  // 0: from the clock
  int utcOffsetMinutes = 0;
  int keepaliveSec = 30;
};

const char kUsage[] =
    "usage: device-sim [options]   (each option also reads the environment variable shown)\n"
    "  --host H            SIM_HOST            broker host (127.0.0.1)\n"
    "  --port N            SIM_PORT            broker port (1883, 8883 with --cafile)\n"
    "  --username U        SIM_USERNAME        MQTT username (none)\n"
    "  --password P        SIM_PASSWORD        MQTT password\n"
    "  --client-id ID      SIM_CLIENT_ID       MQTT client id (esp8266-sim)\n"
    "  --cafile F          SIM_CAFILE          CA certificate (PEM): enables TLS\n"
    "  --certfile F        SIM_CERTFILE        client certificate (PEM)\n"
    "  --keyfile F         SIM_KEYFILE         client private key (PEM)\n"
    "  --tls-version V     SIM_TLS_VERSION     tlsv1.2 (like the device) or tlsv1.3\n"
    "  --time-scale X      SIM_TIME_SCALE      multiply the device's delays (0.01: 30 s -> 0.3 s)\n"
    "  --max-runtime S     SIM_MAX_RUNTIME     always exit after S seconds (300)\n"
    "  --ticks N           SIM_TICKS           exit 0 after N date/time ticks\n"
    "  --millis-start N    SIM_MILLIS_START    initial millis() value, e.g. 4294960000 to\n"
    "                                          cross the 32-bit wrap during the run\n"
    "  --seed N            SIM_SEED            random seed (from the clock)\n"
    "  --utc-offset MIN    SIM_UTC_OFFSET      tick time zone offset in minutes (0)\n"
    "  --keepalive S       SIM_KEEPALIVE       MQTT keepalive seconds (30)\n";

// ---- output ---------------------------------------------------------------------------------

struct timespec g_startTime;
volatile sig_atomic_t g_stopSignal = 0;

uint64_t elapsedMs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)(now.tv_sec - g_startTime.tv_sec) * 1000u +
         (uint64_t)((now.tv_nsec - g_startTime.tv_nsec) / 1000000);
}

void event(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void event(const char* fmt, ...) {
  printf("%llu ", (unsigned long long)elapsedMs());
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

// Payloads are printed on one line: control characters and non-ASCII bytes become '?'.
void printable(const void* data, size_t len, char* out, size_t outSize) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i < len && i + 1 < outSize; i++) {
    out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
  }
  out[i] = '\0';
}

// ---- options --------------------------------------------------------------------------------

template <typename T>
bool parseInteger(const char* s, long long min, long long max, T* out) {
  char* end = nullptr;
  errno = 0;
  const long long v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max) return false;
  *out = static_cast<T>(v);
  return true;
}

bool parseDouble(const char* s, double min, double max, double* out) {
  char* end = nullptr;
  errno = 0;
  const double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max)) return false;
  *out = v;
  return true;
}

// Applies one option by name (the flag without "--"). Returns false for an unknown name or
// a bad value. String values are kept as pointers: they live in argv or the environment.
bool setOption(Options& o, const char* name, const char* value) {
  auto is = [name](const char* option) { return strcmp(name, option) == 0; };
  const char** text = is("host")          ? &o.host
                      : is("username")    ? &o.username
                      : is("password")    ? &o.password
                      : is("client-id")   ? &o.clientId
                      : is("cafile")      ? &o.cafile
                      : is("certfile")    ? &o.certfile
                      : is("keyfile")     ? &o.keyfile
                      : is("tls-version") ? &o.tlsVersion
                                          : nullptr;
  if (text != nullptr) {
    *text = value;
    return true;
  }
  if (is("port")) return parseInteger(value, 1, 65535, &o.port);
  if (is("time-scale")) return parseDouble(value, 0.0001, 100, &o.timeScale);
  if (is("max-runtime")) return parseDouble(value, 0.1, 7 * 86400, &o.maxRuntimeSec);
  if (is("ticks")) return parseInteger(value, 0, 1000000, &o.ticks);
  if (is("millis-start")) return parseInteger(value, 0, 0xffffffffLL, &o.millisStart);
  if (is("seed")) return parseInteger(value, 0, 0x7fffffffffffffffLL, &o.seed);
  if (is("utc-offset")) return parseInteger(value, -1439, 1439, &o.utcOffsetMinutes);
  if (is("keepalive")) return parseInteger(value, 5, 65535, &o.keepaliveSec);
  return false;
}

const char* const kOptionNames[] = {
    "host",        "port",       "username",    "password", "client-id",
    "cafile",      "certfile",   "keyfile",     "tls-version", "time-scale",
    "max-runtime", "ticks",      "millis-start", "seed",    "utc-offset",
    "keepalive",
};

// "client-id" -> "SIM_CLIENT_ID"
void envName(const char* option, char* out, size_t size) {
  size_t i = snprintf(out, size, "SIM_");
  for (; *option && i + 1 < size; option++, i++) {
    const char c = *option;
    out[i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
  }
  out[i] = '\0';
}

bool parseOptions(int argc, char** argv, Options& o) {
  for (const char* name : kOptionNames) {
    char env[40];
    envName(name, env, sizeof env);
    const char* v = getenv(env);
    if (v != nullptr && *v != '\0' && !setOption(o, name, v)) {
      fprintf(stderr, "device-sim: bad value for %s: %s\n", env, v);
      return false;
    }
  }
  for (int i = 1; i < argc; i++) {
    const char* arg = argv[i];
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
      fputs(kUsage, stdout);
      exit(0);
    }
    if (strncmp(arg, "--", 2) != 0) {
      fprintf(stderr, "device-sim: unexpected argument %s\n%s", arg, kUsage);
      return false;
    }
    char name[40];
    const char* value = strchr(arg, '=');
    if (value != nullptr) {  // --name=value
      snprintf(name, sizeof name, "%.*s", (int)(value - arg - 2), arg + 2);
      value++;
    } else {  // --name value
      snprintf(name, sizeof name, "%s", arg + 2);
      if (i + 1 >= argc) {
        fprintf(stderr, "device-sim: %s needs a value\n", arg);
        return false;
      }
      value = argv[++i];
    }
    if (!setOption(o, name, value)) {
      fprintf(stderr, "device-sim: bad option or value: %s\n%s", arg, kUsage);
      return false;
    }
  }
  if (o.port == 0) o.port = o.cafile[0] ? 8883 : 1883;
  if ((o.certfile[0] != '\0') != (o.keyfile[0] != '\0')) {
    fprintf(stderr, "device-sim: --certfile and --keyfile go together\n");
    return false;
  }
  if (o.certfile[0] && !o.cafile[0]) {
    fprintf(stderr, "device-sim: a client certificate needs TLS: also give --cafile\n");
    return false;
  }
  return true;
}

// ---- the simulated device -------------------------------------------------------------------

// xorshift64*: the simulator's stand-in for the ESP8266's hardware RNG.
uint32_t xorshiftNext(void* context) {
  uint64_t* s = static_cast<uint64_t*>(context);
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return (uint32_t)((*s * 0x2545F4914F6CDD1DULL) >> 32);
}

uint32_t scaleMs(uint32_t ms, double scale) {
  const double v = ms * scale;
  return v < 1 ? 1 : (uint32_t)(v + 0.5);
}

// Shortens the device's delays for tests. The connect timeout stays real: it guards against
// a silent broker, and a TLS handshake does not get faster with the scale.
devcore::Timing scaledTiming(double scale) {
  devcore::Timing t;
  t.mqttStartDelayMs = scaleMs(t.mqttStartDelayMs, scale);
  t.tickStartDelayMs = scaleMs(t.tickStartDelayMs, scale);
  t.tickMinMs = scaleMs(t.tickMinMs, scale);
  t.tickMaxMs = scaleMs(t.tickMaxMs, scale);
  t.backoffBaseMs = scaleMs(t.backoffBaseMs, scale);
  t.backoffCapMs = scaleMs(t.backoffCapMs, scale);
  t.stableConnectionMs = scaleMs(t.stableConnectionMs, scale);
  return t;
}

struct Sim {
  Options opt;
  devcore::DeviceCore* core = nullptr;
  struct mosquitto* mosq = nullptr;
  bool connected = false;
  bool everConnected = false;
  bool stopping = false;  // shutting down: a disconnect is expected, no retry
  long ticks = 0;

  // millis(): a free-running uint32 like the ESP8266's, optionally starting near the wrap.
  uint32_t millis() const { return opt.millisStart + (uint32_t)elapsedMs(); }
};

void onConnect(struct mosquitto*, void* obj, int rc) {
  Sim* sim = static_cast<Sim*>(obj);
  if (rc != 0) {
    event("connect_failed rc=%d reason=%s", rc,
          mosquitto_connack_string(rc));  // e.g. "Connection Refused: not authorised."
    sim->core->onDisconnected(sim->millis());
    event("retry delay_ms=%u", sim->core->lastRetryDelayMs());
    return;
  }
  sim->connected = true;
  sim->everConnected = true;
  event("connected");
  sim->core->onConnected(sim->millis());
}

void onDisconnect(struct mosquitto*, void* obj, int rc) {
  Sim* sim = static_cast<Sim*>(obj);
  const bool was = sim->connected;
  sim->connected = false;
  if (sim->stopping) {
    event("disconnected rc=%d reason=%s", rc, mosquitto_strerror(rc));
    return;
  }
  const devcore::ConnState before = sim->core->state();
  sim->core->onDisconnected(sim->millis());
  if (was) {
    event("disconnected rc=%d reason=%s", rc, mosquitto_strerror(rc));
  } else if (before == devcore::ConnState::Connecting) {
    event("connect_failed rc=%d reason=%s", rc, mosquitto_strerror(rc));  // closed before CONNACK
  }
  if (before != sim->core->state()) event("retry delay_ms=%u", sim->core->lastRetryDelayMs());
}

void onMessage(struct mosquitto*, void* obj, const struct mosquitto_message* m) {
  Sim* sim = static_cast<Sim*>(obj);
  const char* kinds[] = {"other", "pub", "led", "led_invalid"};
  const devcore::MessageKind kind =
      sim->core->onMessage(m->topic, static_cast<const char*>(m->payload), (size_t)m->payloadlen);
  char text[256];
  printable(m->payload, (size_t)m->payloadlen, text, sizeof text);
  event("message topic=%s kind=%s retain=%d payload=%s", m->topic, kinds[(int)kind],
        m->retain ? 1 : 0, text);
}

void execute(Sim& sim, const devcore::Action& a) {
  int rc = MOSQ_ERR_SUCCESS;
  switch (a.kind) {
    case devcore::ActionKind::None:
      break;
    case devcore::ActionKind::Connect:
      event("connect host=%s port=%d tls=%d", sim.opt.host, sim.opt.port,
            sim.opt.cafile[0] ? 1 : 0);
      // Blocking TCP connect and TLS handshake, like PubSubClient on the device; CONNACK
      // arrives later through mosquitto_loop() -> onConnect.
      rc = mosquitto_connect(sim.mosq, sim.opt.host, sim.opt.port, sim.opt.keepaliveSec);
      if (rc != MOSQ_ERR_SUCCESS) {
        event("connect_failed rc=%d reason=%s", rc,
              rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        sim.core->onDisconnected(sim.millis());
        event("retry delay_ms=%u", sim.core->lastRetryDelayMs());
      }
      break;
    case devcore::ActionKind::Disconnect:
      event("abort reason=connect_timeout");
      mosquitto_disconnect(sim.mosq);
      event("retry delay_ms=%u", sim.core->lastRetryDelayMs());
      break;
    case devcore::ActionKind::Subscribe:
      rc = mosquitto_subscribe(sim.mosq, nullptr, a.topic, a.qos);
      event("subscribe topic=%s qos=%d rc=%d", a.topic, a.qos, rc);
      break;
    case devcore::ActionKind::Publish:
      rc = mosquitto_publish(sim.mosq, nullptr, a.topic, (int)strlen(a.payload), a.payload, a.qos,
                             a.retain);
      event("publish topic=%s qos=%d retain=%d rc=%d payload=%s", a.topic, a.qos, a.retain ? 1 : 0,
            rc, a.payload);
      if (rc == MOSQ_ERR_SUCCESS && strcmp(a.topic, devcore::kDefaultTopics.tick) == 0) sim.ticks++;
      break;
    case devcore::ActionKind::SetLed:
      event("led state=%s", a.ledOn ? "on" : "off");
      break;
  }
}

void onSignal(int sig) { g_stopSignal = sig; }

// Hard backstop for --max-runtime: a blocking connect to an unreachable host could otherwise
// outlast it by the kernel's TCP connect timeout.
void onAlarm(int) {
  static const char msg[] = "device-sim: hard timeout\n";
  ssize_t ignored = write(2, msg, sizeof msg - 1);
  (void)ignored;
  _exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  clock_gettime(CLOCK_MONOTONIC, &g_startTime);
  Sim sim;
  if (!parseOptions(argc, argv, sim.opt)) return 2;
  const Options& o = sim.opt;

  uint64_t seed = o.seed ? o.seed : ((uint64_t)time(nullptr) << 20) ^ (uint64_t)getpid();
  if (seed == 0) seed = 1;
  const devcore::RandomSource rng{xorshiftNext, &seed};
  devcore::DeviceCore core(devcore::kDefaultTopics, scaledTiming(o.timeScale), rng,
                           o.utcOffsetMinutes);
  sim.core = &core;

  signal(SIGINT, onSignal);
  signal(SIGTERM, onSignal);
  signal(SIGALRM, onAlarm);
  alarm((unsigned)o.maxRuntimeSec + 10);

  mosquitto_lib_init();
  sim.mosq = mosquitto_new(o.clientId, true, &sim);
  if (sim.mosq == nullptr) {
    fprintf(stderr, "device-sim: mosquitto_new: %s\n", strerror(errno));
    return 2;
  }
  mosquitto_int_option(sim.mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_connect_callback_set(sim.mosq, onConnect);
  mosquitto_disconnect_callback_set(sim.mosq, onDisconnect);
  mosquitto_message_callback_set(sim.mosq, onMessage);
  const char* offline = devcore::kStatusOffline;
  mosquitto_will_set(sim.mosq, devcore::kDefaultTopics.status, (int)strlen(offline), offline, 1,
                     true);
  if (o.username[0]) {
    mosquitto_username_pw_set(sim.mosq, o.username, o.password[0] ? o.password : nullptr);
  }
  if (o.cafile[0]) {
    int rc = mosquitto_tls_set(sim.mosq, o.cafile, nullptr, o.certfile[0] ? o.certfile : nullptr,
                               o.keyfile[0] ? o.keyfile : nullptr, nullptr);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_tls_opts_set(sim.mosq, 1, o.tlsVersion, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      fprintf(stderr, "device-sim: TLS setup: %s\n", mosquitto_strerror(rc));
      return 2;
    }
  }

  event("start client_id=%s host=%s port=%d tls=%d time_scale=%g millis_start=%u", o.clientId,
        o.host, o.port, o.cafile[0] ? 1 : 0, o.timeScale, o.millisStart);
  core.begin(sim.millis());

  const uint64_t maxMs = (uint64_t)(o.maxRuntimeSec * 1000);
  const char* reason = "max_runtime";
  while (true) {
    if (g_stopSignal) {
      reason = "signal";
      break;
    }
    if (o.ticks > 0 && sim.ticks >= o.ticks) {
      reason = "ticks";
      break;
    }
    if (elapsedMs() >= maxMs) break;

    // The host's network is always "up"; the host clock stands in for SNTP.
    core.setNetworkUp(true);
    for (devcore::Action a = core.poll(sim.millis(), (int64_t)time(nullptr));
         a.kind != devcore::ActionKind::None; a = core.poll(sim.millis(), (int64_t)time(nullptr))) {
      execute(sim, a);
    }
    // Network I/O for up to 5 ms; without a connection it returns at once, so sleep instead.
    if (mosquitto_loop(sim.mosq, 5, 1) != MOSQ_ERR_SUCCESS) usleep(5000);
  }

  // A deliberate shutdown: say "offline" ourselves (the will is only sent on a lost connection).
  sim.stopping = true;
  if (sim.connected) {
    mosquitto_publish(sim.mosq, nullptr, devcore::kDefaultTopics.status, (int)strlen(offline),
                      offline, 1, true);
    for (int i = 0; i < 20; i++) mosquitto_loop(sim.mosq, 5, 1);
    mosquitto_disconnect(sim.mosq);
    mosquitto_loop(sim.mosq, 5, 1);
  }
  const bool ok = o.ticks > 0 ? sim.ticks >= o.ticks : sim.everConnected;
  event("exit reason=%s ticks=%ld code=%d", reason, sim.ticks, ok ? 0 : 1);
  mosquitto_destroy(sim.mosq);
  mosquitto_lib_cleanup();
  return ok ? 0 : 1;
}
