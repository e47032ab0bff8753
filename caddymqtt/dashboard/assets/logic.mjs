// The dashboard's logic without the DOM or the network: the topic tree,
// payload parsing, formatting, MQTT 5 reason codes, the firmware's topics.
// app.mjs wires it to MQTT.js and the page; logic.test.mjs tests it with
// node's test runner.

// MQTT 5 reason codes [MQTT-2.4] that a page can meet in CONNACK, PUBACK
// and SUBACK, with the words the spec uses.
const REASONS = new Map([
  [0x00, 'Success'],
  [0x01, 'Granted QoS 1'],
  [0x02, 'Granted QoS 2'],
  [0x04, 'Disconnect with will message'],
  [0x10, 'No matching subscribers'],
  [0x80, 'Unspecified error'],
  [0x81, 'Malformed packet'],
  [0x82, 'Protocol error'],
  [0x83, 'Implementation specific error'],
  [0x84, 'Unsupported protocol version'],
  [0x85, 'Client identifier not valid'],
  [0x86, 'Bad user name or password'],
  [0x87, 'Not authorized'],
  [0x88, 'Server unavailable'],
  [0x89, 'Server busy'],
  [0x8a, 'Banned'],
  [0x8b, 'Server shutting down'],
  [0x8c, 'Bad authentication method'],
  [0x8d, 'Keep alive timeout'],
  [0x8e, 'Session taken over'],
  [0x8f, 'Topic filter invalid'],
  [0x90, 'Topic name invalid'],
  [0x91, 'Packet identifier in use'],
  [0x93, 'Receive maximum exceeded'],
  [0x94, 'Topic alias invalid'],
  [0x95, 'Packet too large'],
  [0x96, 'Message rate too high'],
  [0x97, 'Quota exceeded'],
  [0x98, 'Administrative action'],
  [0x99, 'Payload format invalid'],
  [0x9a, 'Retain not supported'],
  [0x9b, 'QoS not supported'],
  [0x9c, 'Use another server'],
  [0x9d, 'Server moved'],
  [0x9e, 'Shared subscriptions not supported'],
  [0x9f, 'Connection rate exceeded'],
  [0xa0, 'Maximum connect time'],
  [0xa1, 'Subscription identifiers not supported'],
  [0xa2, 'Wildcard subscriptions not supported'],
]);

/** hex formats a reason code as 0x87. */
export function hex(code) {
  return '0x' + code.toString(16).padStart(2, '0');
}

/** reasonText is "0x87 Not authorized" for a reason code. */
export function reasonText(code) {
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 0 || code > 0xff) {
    return 'unknown reason';
  }
  return `${hex(code)} ${REASONS.get(code) ?? 'Unknown reason code'}`;
}

/** isFailure reports whether a reason code is a refusal [MQTT-2.4]. */
export function isFailure(code) {
  return typeof code === 'number' && code >= 0x80;
}

/** connectErrorText turns an MQTT.js connect error into what the login form
 * shows. CONNACK refusals carry a reason code; anything else is a network
 * problem. */
export function connectErrorText(err) {
  if (err && typeof err.code === 'number') {
    const code = err.code;
    if (code === 0x86 || code === 0x87 || code === 4 || code === 5) {
      // 4 and 5 are MQTT 3.1.1's return codes for the same refusals.
      return `Login refused: ${code >= 0x80 ? reasonText(code) : code === 4 ? 'bad user name or password' : 'not authorized'}`;
    }
    return `Connection refused: ${reasonText(code)}`;
  }
  const msg = err && err.message ? err.message : String(err);
  return `Connection failed: ${msg}`;
}

/** websocketURL resolves the configured WebSocket path against the page's
 * location: a path gets wss: on an https: page and ws: on an http: page. */
export function websocketURL(configured, location) {
  if (/^wss?:\/\//i.test(configured)) {
    return configured;
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${configured.startsWith('/') ? '' : '/'}${configured}`;
}

/** checkTopicName returns why a topic cannot be published to, or ''
 * [MQTT-4.7.3-1] [MQTT-4.7.1-1] [MQTT-4.7.3-2]. */
export function checkTopicName(topic) {
  if (typeof topic !== 'string' || topic.length === 0) {
    return 'the topic is empty';
  }
  if (/[+#]/.test(topic)) {
    return 'a topic name holds no wildcard (+ or #)';
  }
  if (topic.includes('\u0000')) {
    return 'a topic name holds no NUL character';
  }
  if (new TextEncoder().encode(topic).length > 65535) {
    return 'the topic is longer than 65535 bytes';
  }
  return '';
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** decodePayload returns a payload as text when it is valid UTF-8, and as
 * hex ("0x..") otherwise, with binary set. */
export function decodePayload(bytes) {
  if (typeof bytes === 'string') {
    return { text: bytes, binary: false };
  }
  try {
    return { text: utf8.decode(bytes), binary: false };
  } catch {
    let h = '0x';
    for (const b of bytes.subarray(0, 64)) {
      h += b.toString(16).padStart(2, '0');
    }
    if (bytes.length > 64) {
      h += '…';
    }
    return { text: h, binary: true };
  }
}

/** parseNumber reads a payload as a number: a plain decimal ("21.5",
 * " -3 ", "1e3"), or a JSON object with one numeric field
 * ({"temperature": 21.5}). Anything else is null, so "on", "", dates and
 * hex are not charted. */
export function parseNumber(text) {
  if (typeof text !== 'string') {
    return null;
  }
  const s = text.trim();
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) {
    const n = Number(s);
    return Number.isFinite(n) ? n : null;
  }
  if (s.startsWith('{') && s.length < 4096) {
    try {
      const o = JSON.parse(s);
      const nums = Object.values(o).filter((v) => typeof v === 'number' && Number.isFinite(v));
      if (nums.length === 1) {
        return nums[0];
      }
    } catch {
      // not JSON: not a number
    }
  }
  return null;
}

/** parseLedState reads the firmware's LED state ("on"/"off", any case,
 * surrounding space ignored; also "1"/"0"): true, false, or null. */
export function parseLedState(text) {
  const s = String(text ?? '').trim().toLowerCase();
  if (s === 'on' || s === '1') return true;
  if (s === 'off' || s === '0') return false;
  return null;
}

/** deviceTopics are the firmware's topics (firmware/README.md) for a
 * prefix such as "async-mqtt/ESP8266". */
export function deviceTopics(prefix) {
  return {
    pub: `${prefix}_Pub`,
    tick: `${prefix}_tic`,
    ledSet: `${prefix}/led/set`,
    ledState: `${prefix}/led/state`,
    status: `${prefix}/status`,
  };
}

/** deviceFilter is a subscription filter covering every device topic: the
 * prefix's first level and everything below ("async-mqtt/#"). */
export function deviceFilter(prefix) {
  const first = prefix.split('/')[0];
  return `${first}/#`;
}

/** formatAge turns milliseconds into "now", "42 s", "5 min", "3 h", "2 d". */
export function formatAge(ms) {
  if (!Number.isFinite(ms) || ms < 1000) {
    return 'now';
  }
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

/** truncate shortens text to max characters (code points), marking the
 * cut with an ellipsis. */
export function truncate(text, max) {
  const cps = Array.from(text);
  if (cps.length <= max) {
    return text;
  }
  return cps.slice(0, Math.max(0, max - 1)).join('') + '…';
}

/** A Series keeps the last `cap` points of one or more values over time,
 * in the column form uPlot draws: [[seconds...], [values...], ...]. A
 * missing value is null (a gap in the line). */
export class Series {
  constructor(cap = 300, columns = 1) {
    this.cap = cap;
    this.xs = [];
    this.cols = Array.from({ length: columns }, () => []);
  }

  push(tMs, ...values) {
    this.xs.push(tMs / 1000);
    this.cols.forEach((c, i) => c.push(values[i] ?? null));
    if (this.xs.length > this.cap) {
      const drop = this.xs.length - this.cap;
      this.xs.splice(0, drop);
      this.cols.forEach((c) => c.splice(0, drop));
    }
  }

  get length() {
    return this.xs.length;
  }

  data() {
    return [this.xs, ...this.cols];
  }
}

/** A Rate turns a cumulative counter ($SYS/broker/messages/received) into a
 * per-second rate between consecutive readings. A counter that goes down
 * (broker restart) starts over. */
export class Rate {
  constructor() {
    this.last = null;
  }

  /** push returns the rate since the previous reading, or null for the
   * first one. */
  push(tMs, count) {
    const prev = this.last;
    this.last = { t: tMs, n: count };
    if (!prev || count < prev.n || tMs <= prev.t) {
      return null;
    }
    return ((count - prev.n) * 1000) / (tMs - prev.t);
  }
}

/** The broker's $SYS topics the broker panel charts. */
export const SYS = {
  clients: '$SYS/broker/clients/connected',
  received: '$SYS/broker/messages/received',
  sent: '$SYS/broker/messages/sent',
  version: '$SYS/broker/version',
  uptime: '$SYS/broker/uptime',
};

/** A TopicTree holds the last message of every topic seen, and lays them
 * out as a tree: one row per level, the value on the topic's own row. A
 * tree is bounded: past maxTopics, the least recently updated topic is
 * forgotten, so a flood of topics cannot eat the tab's memory. */
export class TopicTree {
  constructor(maxTopics = 2000) {
    this.maxTopics = maxTopics;
    this.topics = new Map(); // topic -> entry; Map order = update order
  }

  /** update records a message. An empty retained payload clears the
   * retained message [MQTT-3.3.1-6]: the topic is forgotten. Returns the
   * entry, or null when the topic was removed. */
  update(topic, payload, { retain = false, qos = 0, now = Date.now() } = {}) {
    const { text, binary } = decodePayload(payload);
    const size = typeof payload === 'string' ? new TextEncoder().encode(payload).length : payload.length;
    const prev = this.topics.get(topic);
    this.topics.delete(topic);
    if (size === 0 && retain) {
      return null;
    }
    const entry = {
      topic,
      text,
      binary,
      size,
      retain,
      qos,
      time: now,
      count: (prev ? prev.count : 0) + 1,
      number: binary ? null : parseNumber(text),
    };
    this.topics.set(topic, entry);
    while (this.topics.size > this.maxTopics) {
      this.topics.delete(this.topics.keys().next().value);
    }
    return entry;
  }

  get(topic) {
    return this.topics.get(topic);
  }

  get size() {
    return this.topics.size;
  }

  /** rows lays the topics out as a tree, sorted by level name: each row has
   * the level's full path, its depth, its own name and the entry when a
   * message was seen on exactly that topic. "a/b" and "a/b/c" give rows
   * a, a/b (with its entry), a/b/c. Empty levels ("/a", "a//b") are
   * levels like any other, with an empty name. */
  rows() {
    const root = new Map();
    for (const topic of this.topics.keys()) {
      let level = root;
      const parts = topic.split('/');
      let path = '';
      parts.forEach((name, i) => {
        path = i === 0 ? name : `${path}/${name}`;
        let node = level.get(name);
        if (!node) {
          node = { path, name, children: new Map() };
          level.set(name, node);
        }
        level = node.children;
      });
    }
    const out = [];
    const walk = (level, depth) => {
      const names = [...level.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      for (const name of names) {
        const node = level.get(name);
        out.push({ path: node.path, name, depth, entry: this.topics.get(node.path) ?? null });
        walk(node.children, depth + 1);
      }
    };
    walk(root, 0);
    return out;
  }
}
