// MQTT.js round trip against a caddy-mqtt WebSocket door, run by
// integration/mqttjs_test.go.
//
// Usage: node roundtrip.mjs URL TOPIC PROTOCOL_VERSION [CA_FILE]
//
// It connects with MQTT.js (protocol version 3, 4 or 5), subscribes to TOPIC
// at QoS 2, publishes one message at each of QoS 0, 1 and 2 and waits until
// all three come back. It prints one JSON line ({ok, subprotocol, received,
// error}) and exits 0 on success, 1 on any failure, including the hard
// timeout (MQTT_TIMEOUT_MS, default 20000), so a hung broker cannot hang the
// Go test.
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import WebSocket from 'ws';

const [url, topic, versionArg, caFile] = process.argv.slice(2);
const version = Number(versionArg);
if (!url || !topic || ![3, 4, 5].includes(version)) {
  console.error('usage: node roundtrip.mjs URL TOPIC 3|4|5 [CA_FILE]');
  process.exit(2);
}
// MQTT 3.1 is "MQIsdp" on the wire; MQTT.js then offers the WebSocket
// subprotocol "mqttv3.1" instead of "mqtt".
const wantSubprotocol = version === 3 ? 'mqttv3.1' : 'mqtt';

const result = { ok: false, protocolVersion: version, subprotocol: null, received: [], error: null };
let finished = false;
let client;

function finish(err) {
  if (finished) return;
  finished = true;
  if (err) result.error = String(err && err.message ? err.message : err);
  result.ok = !err;
  console.log(JSON.stringify(result));
  const exit = () => process.exit(result.ok ? 0 : 1);
  // A clean DISCONNECT on success; on failure just leave.
  if (client && result.ok) client.end(false, {}, exit);
  else exit();
  // end's callback can wait on a dead socket; never outlive one second more.
  setTimeout(exit, 1000).unref();
}

setTimeout(() => finish(new Error('timeout')), Number(process.env.MQTT_TIMEOUT_MS || 20000));

// Keep the WebSocket MQTT.js creates, to read the subprotocol the server
// echoed. (ws already fails the handshake when the server echoes none or
// another one; this makes the value visible to the Go test.)
let socket;
const options = {
  protocolVersion: version,
  protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
  clientId: `mqttjs-v${version}-${randomBytes(4).toString('hex')}`,
  clean: true,
  keepalive: 30,
  connectTimeout: 5000,
  reconnectPeriod: 0, // a failure must fail the run, not retry
  createWebsocket: (wsURL, protocols, opts) => {
    socket = new WebSocket(wsURL, protocols, opts.wsOptions);
    return socket;
  },
};
if (caFile) {
  // Trust only Caddy's internal CA and check the name localhost.
  options.ca = readFileSync(caFile);
  options.rejectUnauthorized = true;
  options.wsOptions = { servername: 'localhost' };
}

const payloads = [0, 1, 2].map((qos) => `mqttjs v${version} qos${qos} ${randomBytes(4).toString('hex')}`);

client = mqtt.connect(url, options);
client.on('error', (err) => finish(err));
client.on('close', () => finish(new Error('connection closed before the round trip completed')));
client.on('message', (t, payload, packet) => {
  result.received.push({ topic: t, qos: packet.qos, payload: payload.toString() });
  const got = new Set(result.received.map((m) => m.payload));
  if (payloads.every((p) => got.has(p))) {
    for (const m of result.received) {
      const want = payloads.indexOf(m.payload);
      if (want >= 0 && m.qos !== want) {
        finish(new Error(`message ${JSON.stringify(m.payload)} came back at QoS ${m.qos}, want ${want}`));
        return;
      }
    }
    finish(null);
  }
});
client.on('connect', async () => {
  try {
    result.subprotocol = socket ? socket.protocol : null;
    if (result.subprotocol !== wantSubprotocol) {
      throw new Error(`server echoed subprotocol ${JSON.stringify(result.subprotocol)}, want ${wantSubprotocol}`);
    }
    const granted = await client.subscribeAsync(topic, { qos: 2 });
    if (granted.length !== 1 || granted[0].qos !== 2) {
      throw new Error(`subscription granted ${JSON.stringify(granted)}`);
    }
    for (const qos of [0, 1, 2]) {
      await client.publishAsync(topic, payloads[qos], { qos });
    }
  } catch (err) {
    finish(err);
  }
});
