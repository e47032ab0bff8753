// MQTT.js 5 publishes with user properties and the other PUBLISH properties,
// run by integration/mqttjs_test.go (TestMQTTJSProperties).
//
// Usage: node properties.mjs URL TOPIC [CA_FILE]
//
// A subscriber and a publisher connect with MQTT 5; the publisher sends one
// QoS 1 and one QoS 2 message carrying several user properties (a repeated
// key, UTF-8 keys and values), content type, response topic, correlation
// data and payload format. It prints one JSON line ({ok, acks, received,
// error}) with what the subscriber got and exits 0 when both were
// acknowledged and arrived; 1 otherwise, including at the hard timeout
// (MQTT_TIMEOUT_MS, default 20000).
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';

const [url, topic, caFile] = process.argv.slice(2);
if (!url || !topic) {
  console.error('usage: node properties.mjs URL TOPIC [CA_FILE]');
  process.exit(2);
}

const result = { ok: false, acks: 0, received: [], error: null };
let finished = false;
const clients = [];

function finish(err) {
  if (finished) return;
  finished = true;
  if (err) result.error = String(err && err.message ? err.message : err);
  result.ok = !err;
  console.log(JSON.stringify(result));
  for (const c of clients) c.end(true);
  setTimeout(() => process.exit(result.ok ? 0 : 1), 200).unref();
}
setTimeout(() => finish(new Error('timeout')), Number(process.env.MQTT_TIMEOUT_MS || 20000));

const base = {
  protocolVersion: 5,
  clean: true,
  keepalive: 30,
  connectTimeout: 5000,
  reconnectPeriod: 0,
};
if (caFile) base.ca = readFileSync(caFile);

function connect(name) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { ...base, clientId: `props-${name}-${randomBytes(4).toString('hex')}` });
    clients.push(c);
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

const properties = {
  payloadFormatIndicator: true,
  contentType: 'text/plain; charset=utf-8',
  responseTopic: `${topic}/reply`,
  correlationData: Buffer.from([0, 1, 2, 0xfe, 0xff]),
  userProperties: { k: ['v', 'w'], 'ключ': 'значение ✓', empty: '' },
};

try {
  const sub = await connect('sub');
  const pub = await connect('pub');
  sub.on('message', (t, payload, packet) => {
    const p = packet.properties || {};
    result.received.push({
      topic: t,
      qos: packet.qos,
      payload: payload.toString(),
      payloadFormatIndicator: p.payloadFormatIndicator ?? null,
      contentType: p.contentType ?? null,
      responseTopic: p.responseTopic ?? null,
      correlationData: p.correlationData ? Buffer.from(p.correlationData).toString('hex') : null,
      // A single value comes as a string, a repeated key as an array.
      userProperties: p.userProperties
        ? Object.fromEntries(Object.entries(p.userProperties).map(([k, v]) => [k, Array.isArray(v) ? v : [v]]))
        : null,
    });
    if (result.received.length === 2 && result.acks === 2) finish();
  });
  await sub.subscribeAsync(topic, { qos: 2 });
  for (const qos of [1, 2]) {
    await pub.publishAsync(topic, `qos${qos} ✓`, { qos, properties });
    result.acks++;
  }
  if (result.received.length === 2) finish();
} catch (err) {
  finish(err);
}
