#!/usr/bin/env bash
# End-to-end test of the device simulator (firmware/sim) against Debian's mosquitto broker,
# on loopback only. Run by `make -C firmware check-sim`; takes about 15 s.
#
# What it proves, with real MQTT over real sockets:
#   A. plain MQTT + username/password: test1..3 published and echoed back (subscription
#      works), date/time ticks in ISO 8601 at the scaled 10..30 s intervals, the LED command
#      topic (case/whitespace, toggle, invalid), the retained LED state, and a reconnect after
#      the broker restarts. millis() starts just below 2^32, so all of it crosses the wrap.
#   B. a wrong password: refused, retried with growing capped backoff, exit status 1.
#   C. TLS 1.2 with a P-256 client certificate (mosquitto: require_certificate,
#      use_identity_as_username): connects and ticks.
#   D. TLS without a client certificate: refused, exit status 1.
#   E. the will: killing the device makes the broker publish the retained "offline".
#
# Usage: sim_mosquitto_test.sh [path/to/device-sim]
set -euo pipefail

SIM=${1:-"$(dirname "$0")/../build/sim/device-sim"}
SIM=$(cd "$(dirname "$SIM")" && pwd)/$(basename "$SIM")
[ -x "$SIM" ] || { echo "device simulator not found at $SIM (run make -C firmware sim)" >&2; exit 1; }
for tool in mosquitto mosquitto_sub mosquitto_pub mosquitto_passwd openssl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run firmware/ci-deps.sh)" >&2; exit 1; }
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   $*"; }
fail() {
  echo "FAIL $*" >&2
  for f in "$WORK"/*.out "$WORK"/*.log; do
    [ -f "$f" ] && { echo "---- $f" >&2; tail -n 40 "$f" >&2; }
  done
  exit 1
}

# A free loopback TCP port: nothing answers a connect to it.
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  return 1
}

# wait_for FILE REGEX [COUNT] [SECONDS]: until FILE has COUNT lines matching REGEX.
wait_for() {
  local file=$1 re=$2 count=${3:-1} secs=${4:-10} i
  for ((i = 0; i < secs * 20; i++)); do
    if [ "$(grep -cE -- "$re" "$file" 2>/dev/null || true)" -ge "$count" ]; then return 0; fi
    sleep 0.05
  done
  return 1
}

count() { grep -cE -- "$2" "$1" || true; }

# wait_retained TOPIC WANT: until the broker's retained message on TOPIC is WANT. Polls,
# because the device's "publish" line is printed when the message is queued, not delivered.
RETAINED=
wait_retained() {
  local i
  for ((i = 0; i < 50; i++)); do
    RETAINED=$(mosquitto_sub "${WATCH[@]}" -C 1 -W 5 -t "$1")
    [ "$RETAINED" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# ---- certificates: a P-256 CA, a server certificate for 127.0.0.1, a device certificate ------
cd "$WORK"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=caddy-mqtt test CA" -out ca.pem 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
  -extfile server.ext -out server.pem 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out device.key 2>/dev/null
openssl req -new -key device.key -subj "/CN=esp8266-sim" -out device.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > device.ext
openssl x509 -req -in device.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
  -extfile device.ext -out device.pem 2>/dev/null

# ---- broker ----------------------------------------------------------------------------------
PORT=$(free_port)
TLS_PORT=$(free_port)
mosquitto_passwd -b -c passwd device s3cret >/dev/null 2>&1
mosquitto_passwd -b passwd watcher w4tch >/dev/null 2>&1
chmod 600 passwd
cat > mosquitto.conf <<EOF
# mosquitto drops root privileges to this user; keep the one that owns $WORK.
user $(id -un)
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
per_listener_settings true

listener $PORT 127.0.0.1
allow_anonymous false
password_file $WORK/passwd

listener $TLS_PORT 127.0.0.1
allow_anonymous false
cafile $WORK/ca.pem
certfile $WORK/server.pem
keyfile $WORK/server.key
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
EOF

BROKER_PID=
start_broker() {
  mosquitto -c "$WORK/mosquitto.conf" >>"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  local i
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  fail "mosquitto did not start on port $PORT"
}
start_broker
echo "mosquitto on 127.0.0.1:$PORT (plain) and :$TLS_PORT (TLS)"

WATCH=(-h 127.0.0.1 -p "$PORT" -u watcher -P w4tch)
TS_RE='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z'

# ---- A. plain MQTT, password, ticks, LED, reconnect, millis() wrap ------------------------
mosquitto_sub "${WATCH[@]}" -v -t 'async-mqtt/#' > watch.log 2>&1 &
PIDS+=($!)
sleep 0.3  # let the watcher subscribe before the device publishes
"$SIM" --port "$PORT" --username device --password s3cret --client-id esp8266-a \
  --time-scale 0.01 --max-runtime 40 --millis-start $((4294967296 - 400)) --seed 7 \
  > a.out 2> a.err &
SIM_PID=$!
PIDS+=("$SIM_PID")

wait_for a.out 'message topic=async-mqtt/ESP8266_Pub kind=pub .*payload=test3$' || fail "A: no test3 echo"
pass "A: connected with username/password, subscribed, got its own test1..3 back"

mosquitto_pub "${WATCH[@]}" -q 1 -t async-mqtt/ESP8266/led/set -m '  ON '
wait_for a.out 'led state=on$' || fail "A: LED did not switch on"
wait_for a.out 'publish topic=async-mqtt/ESP8266/led/state qos=1 retain=1 rc=0 payload=on$' ||
  fail "A: LED state not published"
wait_retained async-mqtt/ESP8266/led/state on || fail "A: retained LED state is '$RETAINED', want on"
pass "A: LED command ' ON ' switched the LED; retained state is 'on'"

mosquitto_pub "${WATCH[@]}" -q 1 -t async-mqtt/ESP8266/led/set -m "$(printf 'Toggle\n')"
wait_for a.out 'publish topic=async-mqtt/ESP8266/led/state .*payload=off$' || fail "A: toggle"
mosquitto_pub "${WATCH[@]}" -q 1 -t async-mqtt/ESP8266/led/set -m blink
wait_for a.out 'kind=led_invalid retain=0 payload=blink$' || fail "A: invalid command not seen"
sleep 0.2
[ "$(count a.out 'led state=')" -eq 3 ] || fail "A: 'blink' changed the LED"  # off at boot, on, off
pass "A: 'Toggle\\n' switched it off; 'blink' was ignored"

wait_for a.out "publish topic=async-mqtt/ESP8266_tic qos=0 retain=0 rc=0 payload=$TS_RE\$" 3 ||
  fail "A: fewer than 3 ticks"
pass "A: date/time ticks in ISO 8601"

# Restart the broker: the device must notice, back off, and reconnect by itself.
kill "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
wait_for a.out '^[0-9]+ disconnected ' || fail "A: broker stop not noticed"
sleep 0.3
start_broker
wait_for a.out '^[0-9]+ connected$' 2 || fail "A: no reconnect after broker restart"
wait_for a.out 'publish topic=async-mqtt/ESP8266_Pub qos=2 .*payload=test3$' 2 ||
  fail "A: connect sequence not repeated"
ticks_before=$(count a.out 'topic=async-mqtt/ESP8266_tic')
wait_for a.out 'topic=async-mqtt/ESP8266_tic' $((ticks_before + 2)) || fail "A: no ticks after reconnect"
pass "A: reconnected after a broker restart, repeated the connect sequence, kept ticking"

kill -TERM "$SIM_PID"
set +e; wait "$SIM_PID"; rc=$?; set -e
[ "$rc" -eq 0 ] || fail "A: exit status $rc after SIGTERM, want 0"
grep -qE '^[0-9]+ exit reason=signal ' a.out || fail "A: no exit line"

# Timing, from the simulator's own timestamps (scale 0.01: start 300 ms, first tick 200 ms
# after connect, then 100..300 ms; allow 60 ms of scheduling slack on the upper bounds).
awk -v TS_RE="$TS_RE" '
  / connect host=/ && !first_connect { first_connect = $1 }
  / connected$/ { connected = $1; last_tick = -1 }
  / publish topic=async-mqtt\/ESP8266_tic / {
    if (last_tick < 0) { gap = $1 - connected; lo = 200; hi = 260 } else { gap = $1 - last_tick; lo = 100; hi = 360 }
    if (gap < lo || gap > hi) { printf "tick gap %d ms outside [%d, %d] at line %d\n", gap, lo, hi, NR; bad = 1 }
    last_tick = $1; n++
  }
  END {
    if (first_connect < 300 || first_connect > 360) { printf "first connect at %d ms, want 300\n", first_connect; bad = 1 }
    if (n < 5) { printf "only %d ticks\n", n; bad = 1 }
    exit bad
  }' a.out > timing.log || fail "A: timing: $(cat timing.log)"
pass "A: first connect 300 ms after start, first tick 200 ms after connect, then 100..300 ms apart"

kill "${PIDS[1]}" 2>/dev/null || true  # the watcher
for msg in test1 test2 test3; do
  grep -qx "async-mqtt/ESP8266_Pub $msg" watch.log || fail "A: watcher did not get $msg"
done
grep -qE "^async-mqtt/ESP8266_tic $TS_RE\$" watch.log || fail "A: watcher got no tick"
grep -qx "async-mqtt/ESP8266/status online" watch.log || fail "A: watcher got no online status"
pass "A: another client saw test1..3, the ticks and the online status"

# ---- B. wrong password: refused, capped exponential backoff -------------------------------
set +e
"$SIM" --port "$PORT" --username device --password wrong --client-id esp8266-b \
  --time-scale 0.01 --max-runtime 3 > b.out 2> b.err
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "B: exit status $rc, want 1"
[ "$(count b.out 'connect_failed rc=5 ')" -ge 4 ] || fail "B: expected >= 4 refused attempts"
# Delay ceilings double from 20 ms up to the 1200 ms cap, each delay in [ceiling/2, ceiling]:
# so until the cap a delay is never shorter than the one before, and none exceeds the cap
# or (once capped) drops below half of it.
awk '/ retry delay_ms=/ { split($3, kv, "="); d = kv[2] + 0
       floor = prev < 600 ? prev : 600
       if (d < floor || d > 1200) { print "delay " d " after " prev; bad = 1 } prev = d; n++ }
     END { if (n < 4 || prev < 320) { print n " retries, last " prev; bad = 1 } exit bad }' \
  b.out > backoff.log || fail "B: backoff: $(cat backoff.log)"
pass "B: wrong password refused; retries back off ($(grep -o 'delay_ms=[0-9]*' b.out | cut -d= -f2 | paste -sd' '))"

# ---- C. TLS with a client certificate ------------------------------------------------------
"$SIM" --host 127.0.0.1 --port "$TLS_PORT" --cafile ca.pem --certfile device.pem --keyfile device.key \
  --client-id esp8266-c --time-scale 0.01 --ticks 2 --max-runtime 20 > c.out 2> c.err ||
  fail "C: TLS device did not reach 2 ticks"
grep -q ' connect host=127.0.0.1 port='"$TLS_PORT"' tls=1$' c.out || fail "C: did not use TLS"
grep -q 'payload=test3$' c.out || fail "C: no test3 over TLS"
pass "C: TLS 1.2 with a P-256 client certificate: connected, published, ticked"

# ---- D. TLS without a client certificate ---------------------------------------------------
set +e
"$SIM" --port "$TLS_PORT" --cafile ca.pem --client-id esp8266-d --time-scale 0.01 --max-runtime 1.5 \
  > d.out 2> d.err
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "D: exit status $rc without a client certificate, want 1"
grep -q 'connect_failed' d.out || fail "D: no connect_failed"
! grep -qE '^[0-9]+ connected$' d.out || fail "D: connected without a client certificate"
pass "D: TLS without a client certificate is refused"

# ---- E. will: the broker announces a vanished device ---------------------------------------
"$SIM" --port "$PORT" --username device --password s3cret --client-id esp8266-e \
  --time-scale 0.01 --max-runtime 20 > e.out 2> e.err &
E_PID=$!
PIDS+=("$E_PID")
wait_for e.out 'payload=online$' || fail "E: no online status"
wait_retained async-mqtt/ESP8266/status online || fail "E: retained status '$RETAINED', want online"
kill -KILL "$E_PID"
wait "$E_PID" 2>/dev/null || true
wait_retained async-mqtt/ESP8266/status offline ||
  fail "E: retained status '$RETAINED' after kill -9, want offline"
pass "E: kill -9 of the device -> broker published the retained will 'offline'"

echo "$PASSED passed, 0 failed"
