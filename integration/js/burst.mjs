// MQTT.js burst publisher and subscriber for integration/delivery_test.go.
//
//   node burst.mjs pub URL TOPIC N INFLIGHT   publish "0".."N-1" at QoS 1,
//                                             keeping INFLIGHT unacknowledged
//   node burst.mjs sub URL TOPIC N            subscribe at QoS 1, print
//                                             "ready", then one line per
//                                             payload until N or 5 s of quiet
//
// The publisher prints one JSON line {ok, acked, error}. Both exit on their
// own within MQTT_TIMEOUT_MS (default 60000), so a hung broker cannot hang
// the Go test.
import mqtt from 'mqtt';

const [mode, url, topic, nArg, inflightArg] = process.argv.slice(2);
const n = Number(nArg);
const timeout = Number(process.env.MQTT_TIMEOUT_MS || 60000);
setTimeout(() => { console.error('timeout'); process.exit(1); }, timeout).unref();

const client = mqtt.connect(url, {
  protocolVersion: 4,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 10000,
  clientId: `burst-${mode}-${process.pid}`,
});
client.on('error', (err) => { console.error(String(err)); process.exit(1); });

if (mode === 'pub') {
  const inflight = Number(inflightArg);
  let next = 0;
  let acked = 0;
  const send = () => {
    if (next >= n) return;
    const i = next++;
    client.publish(topic, String(i), { qos: 1 }, (err) => {
      if (err) { console.log(JSON.stringify({ ok: false, acked, error: String(err) })); process.exit(1); }
      acked++;
      if (acked === n) {
        console.log(JSON.stringify({ ok: true, acked, error: null }));
        client.end(false, {}, () => process.exit(0));
        return;
      }
      send();
    });
  };
  client.on('connect', () => { for (let k = 0; k < inflight; k++) send(); });
} else if (mode === 'sub') {
  let got = 0;
  let quiet;
  const lines = [];
  const done = () => {
    process.stdout.write(lines.join('\n') + (lines.length ? '\n' : ''), () => {
      client.end(false, {}, () => process.exit(0));
    });
  };
  const arm = () => { clearTimeout(quiet); quiet = setTimeout(done, 5000); };
  client.on('connect', () => {
    client.subscribe(topic, { qos: 1 }, (err) => {
      if (err) { console.error(String(err)); process.exit(1); }
      console.log('ready');
      arm();
    });
  });
  client.on('message', (_t, payload) => {
    lines.push(payload.toString());
    got++;
    if (got >= n) { clearTimeout(quiet); done(); } else arm();
  });
} else {
  console.error('usage: node burst.mjs pub|sub URL TOPIC N [INFLIGHT]');
  process.exit(2);
}
