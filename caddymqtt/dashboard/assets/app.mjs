// The dashboard page: MQTT.js (MQTT 5 over WebSocket to this site) wired to
// the DOM. Everything a message carries is attacker-controlled text: it is
// only ever written with textContent, never parsed as HTML.
import mqtt from './vendor/mqtt.esm.js';
import uPlot from './vendor/uPlot.esm.js';
import {
  reasonText, isFailure, connectErrorText, websocketURL, checkTopicName, parseLedState,
  deviceTopics, deviceFilter, formatAge, truncate, Series, Rate, SYS, TopicTree,
} from './logic.mjs';

const $ = (id) => document.getElementById(id);
const cfg = document.body.dataset;
const dev = deviceTopics(cfg.devicePrefix);
const LOGIN_KEY = 'caddy-mqtt-dashboard-login';
const MAX_CHARTED = 50; // numeric topics whose history is kept

let client = null;
let tree = new TopicTree();
let series = new Map(); // topic -> Series
let sys = newSys();
let dirty = false;
let numericTopicsKnown = new Set();
let chart = null;
let sysChart = null;
let ledState = null;

// sys is the broker panel's state: connected clients and the rate of
// messages received, one point per $SYS interval.
function newSys() {
  return { series: new Series(300, 2), clients: null, rate: new Rate(), lastRate: null };
}

function setText(id, text) {
  $(id).textContent = text;
}

function setConn(state, text) {
  const el = $('conn');
  el.dataset.state = state;
  el.textContent = text ?? state;
}

// ---- login -------------------------------------------------------------

function showLogin(error) {
  $('main').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  setText('whoami', '');
  setText('login-error', error ?? '');
  $('login-button').disabled = false;
  $('anonymous-button').disabled = false;
}

function savedLogin() {
  try {
    return JSON.parse(sessionStorage.getItem(LOGIN_KEY) ?? 'null');
  } catch {
    return null;
  }
}

// resetView forgets everything a previous login showed.
function resetView() {
  tree = new TopicTree();
  series = new Map();
  numericTopicsKnown = new Set();
  sys = newSys();
  ledState = null;
  dirty = true;
  const sel = $('chart-topic');
  sel.replaceChildren(new Option('(none seen yet)', ''));
  chart?.setData([[], []]);
  sysChart?.setData([[], [], []]);
  setText('sys-note', 'Waiting for $SYS…');
  setText('sub-result', '');
  setText('pub-result', '');
  const st = $('device-status');
  st.dataset.state = 'unknown';
  st.textContent = 'unknown';
  setText('device-tick', '–');
  $('device-messages').replaceChildren();
  $('led').checked = false;
  $('led').indeterminate = false;
  setText('led-state', 'unknown');
  setText('led-note', '');
}

function start(login, remember) {
  if (client) {
    client.end(true);
  }
  resetView();
  $('login-button').disabled = true;
  $('anonymous-button').disabled = true;
  setText('login-error', '');
  setConn('connecting', 'connecting…');

  const url = websocketURL(cfg.websocketPath, window.location);
  const opts = {
    protocolVersion: 5,
    clientId: 'dashboard-' + crypto.getRandomValues(new Uint32Array(2)).join('').slice(0, 16),
    clean: true,
    keepalive: 30,
    connectTimeout: 15000,
    reconnectPeriod: 3000,
  };
  if (!login.anonymous) {
    opts.username = login.username;
    opts.password = login.password;
  }
  const c = mqtt.connect(url, opts);
  client = c;
  let everConnected = false;

  c.on('connect', () => {
    if (c !== client) return;
    setConn('connected');
    if (!everConnected) {
      everConnected = true;
      if (remember) {
        sessionStorage.setItem(LOGIN_KEY, JSON.stringify(login));
      }
      $('login').hidden = true;
      $('main').hidden = false;
      $('logout').hidden = false;
      setText('whoami', login.anonymous ? 'anonymous' : login.username);
      subscribeDefaults(c);
      setupCharts();
    }
  });
  c.on('error', (err) => {
    if (c !== client) return;
    // A refused CONNECT (wrong password, not authorized) will be refused
    // again: stop, forget the password and say why. Network errors are
    // retried by MQTT.js.
    if (typeof err.code === 'number') {
      c.end(true);
      client = null;
      sessionStorage.removeItem(LOGIN_KEY);
      setConn('refused');
      showLogin(connectErrorText(err));
      return;
    }
    if (!everConnected) {
      setText('login-error', connectErrorText(err));
    }
  });
  c.on('reconnect', () => c === client && setConn('connecting', 'reconnecting…'));
  c.on('offline', () => c === client && setConn('disconnected'));
  c.on('close', () => c === client && !c.connected && setConn('disconnected'));
  c.on('disconnect', (packet) => {
    if (c !== client) return;
    setConn('disconnected', `disconnected by the broker: ${reasonText(packet.reasonCode ?? 0)}`);
  });
  c.on('message', onMessage);
}

// subscribeFilter subscribes with Retain As Published [MQTT-3.8.3-3], so the
// tree shows the retain flag of live messages too, not only of those the
// broker replays at subscription time.
function subscribeFilter(c, filter, onDone) {
  c.subscribe(filter, { qos: 1, rap: true }, (err, granted) => {
    if (err) {
      // MQTT.js reports a refused filter (SUBACK reason >= 0x80) as an
      // error carrying the SUBACK.
      const rc = err.packet && Array.isArray(err.packet.granted) ? err.packet.granted.find(isFailure) : undefined;
      onDone(false, rc !== undefined ? reasonText(rc) : err.message);
      return;
    }
    const code = granted && granted[0] ? granted[0].qos : 0x80;
    onDone(!isFailure(code), reasonText(code));
  });
}

// subscribeDefaults subscribes to the configured filters (default "#") and
// $SYS; when the ACL refuses every filter, it still follows the device, if
// the ACL allows that.
function subscribeDefaults(c) {
  const filters = (cfg.subscribe || '#').split(' ').filter(Boolean);
  const granted = [];
  const refused = [];
  let pending = filters.length;
  for (const f of filters) {
    subscribeFilter(c, f, (ok, why) => {
      (ok ? granted : refused).push(ok ? f : `${f} (${why})`);
      if (--pending > 0) return;
      const lines = [];
      if (granted.length) lines.push(`Subscribed to ${granted.join(', ')}.`);
      if (refused.length) lines.push(`Not allowed to read ${refused.join(', ')}.`);
      setText('sub-result', lines.join(' '));
      if (granted.length) return;
      const df = deviceFilter(cfg.devicePrefix);
      subscribeFilter(c, df, (ok2, why2) => {
        setText('sub-result', lines.join(' ') + (ok2 ? ` Following ${df}.` : ` Not allowed to read ${df} either (${why2}).`));
      });
    });
  }
  subscribeFilter(c, '$SYS/#', (ok, why) => {
    if (!ok) {
      setText('sys-note', `Not allowed to read $SYS (${why}).`);
    }
  });
}

// ---- messages ----------------------------------------------------------

function onMessage(topic, payload, packet) {
  const now = Date.now();
  const entry = tree.update(topic, payload, { retain: packet.retain, qos: packet.qos, now });
  dirty = true;
  if (!entry) {
    return;
  }
  if (topic.startsWith('$SYS/')) {
    onSys(topic, entry, now);
  } else if (entry.number !== null) {
    let s = series.get(topic);
    if (!s && series.size < MAX_CHARTED) {
      s = new Series(300);
      series.set(topic, s);
    }
    if (s) {
      s.push(now, entry.number);
      if (!numericTopicsKnown.has(topic)) {
        numericTopicsKnown.add(topic);
        addChartTopic(topic);
      }
      if ($('chart-topic').value === topic) {
        chart?.setData(s.data());
      }
    }
  }
  onDevice(topic, entry);
}

function onDevice(topic, entry) {
  switch (topic) {
    case dev.status: {
      const s = entry.text.trim().toLowerCase();
      const el = $('device-status');
      el.dataset.state = s === 'online' || s === 'offline' ? s : 'unknown';
      el.textContent = truncate(entry.text, 40) || 'unknown';
      break;
    }
    case dev.tick:
      setText('device-tick', truncate(entry.text, 64));
      break;
    case dev.pub: {
      const li = document.createElement('li');
      li.textContent = truncate(entry.text, 200);
      const list = $('device-messages');
      list.append(li);
      while (list.children.length > 5) list.firstElementChild.remove();
      break;
    }
    case dev.ledState: {
      ledState = parseLedState(entry.text);
      $('led').checked = ledState === true;
      $('led').indeterminate = ledState === null;
      setText('led-state', ledState === null ? `unknown (${truncate(entry.text, 20)})` : ledState ? 'on' : 'off');
      setText('led-note', '');
      break;
    }
    default:
  }
}

function onSys(topic, entry, now) {
  if (entry.number === null) return;
  if (topic === SYS.clients) {
    sys.clients = entry.number;
    return;
  }
  if (topic !== SYS.received) return;
  // One point per $SYS interval, when the message counter arrives (the
  // broker publishes its $SYS topics in no fixed order, so the client count
  // may be the previous interval's).
  const r = sys.rate.push(now, entry.number);
  if (r !== null) sys.lastRate = r;
  sys.series.push(now, sys.clients, r);
  setText('sys-note', `${sys.clients ?? '?'} clients connected` +
    (sys.lastRate === null ? '' : `, ${sys.lastRate.toFixed(1)} messages/s received`));
  sysChart?.setData(sys.series.data());
}

// ---- topic tree --------------------------------------------------------

function renderTree() {
  if (!$('main').hidden) {
    const now = Date.now();
    const body = document.createElement('tbody');
    for (const row of tree.rows()) {
      const tr = document.createElement('tr');
      tr.dataset.topic = row.path;
      const name = document.createElement('td');
      name.className = 'name';
      name.style.paddingLeft = `${0.5 + row.depth}rem`;
      name.textContent = row.name === '' ? '(empty)' : row.name;
      name.title = row.path;
      const value = document.createElement('td');
      value.className = 'value';
      const retain = document.createElement('td');
      retain.className = 'retain';
      const age = document.createElement('td');
      age.className = 'age';
      const e = row.entry;
      if (e) {
        value.textContent = truncate(e.text, 300);
        if (e.binary) value.classList.add('binary');
        retain.textContent = e.retain ? 'retained' : '';
        age.textContent = formatAge(now - e.time);
        if (now - e.time < 2000) tr.classList.add('fresh');
      }
      tr.append(name, value, retain, age);
      body.append(tr);
    }
    $('tree').tBodies[0].replaceWith(body);
    setText('topic-count', `(${tree.size})`);
  }
  dirty = false;
}

// Redraw at most every 200 ms while messages arrive, and every second for
// the ages.
let lastFull = 0;
setInterval(() => {
  const now = Date.now();
  if (dirty || now - lastFull >= 1000) {
    lastFull = now;
    renderTree();
  }
}, 200);

// ---- charts ------------------------------------------------------------

function chartWidth(el) {
  return Math.max(200, el.clientWidth || el.parentElement.clientWidth - 32);
}

function setupCharts() {
  if (!chart) {
    const el = $('chart');
    chart = new uPlot({
      width: chartWidth(el), height: 180,
      series: [{}, { label: 'value', stroke: '#1f6feb', width: 2 }],
      axes: [{}, { size: 60 }],
    }, [[], []], el);
  }
  if (!sysChart) {
    const el = $('sys-chart');
    sysChart = new uPlot({
      width: chartWidth(el), height: 180,
      scales: { clients: {}, rate: {} },
      series: [{},
        { label: 'clients', stroke: '#1a7f37', width: 2, scale: 'clients' },
        { label: 'messages/s', stroke: '#cf222e', width: 2, scale: 'rate' }],
      axes: [{}, { scale: 'clients', size: 50 }, { scale: 'rate', side: 1, size: 50, grid: { show: false } }],
    }, [[], [], []], el);
  }
}

window.addEventListener('resize', () => {
  chart?.setSize({ width: chartWidth($('chart')), height: 180 });
  sysChart?.setSize({ width: chartWidth($('sys-chart')), height: 180 });
});

function addChartTopic(topic) {
  const sel = $('chart-topic');
  if (sel.options.length === 1 && sel.options[0].value === '') {
    sel.options[0].remove();
  }
  const opt = document.createElement('option');
  opt.value = topic;
  opt.textContent = topic;
  sel.append(opt);
  if (sel.options.length === 1) {
    sel.value = topic;
    chart?.setData(series.get(topic).data());
  }
}

$('chart-topic').addEventListener('change', (e) => {
  const s = series.get(e.target.value);
  if (s) chart?.setData(s.data());
});

// ---- publishing ----------------------------------------------------------

// publish sends one message and calls done(text, ok) with what the broker
// said: at QoS 1 and 2 an MQTT 5 broker answers with a reason code, and
// MQTT.js reports a refusal (>= 0x80) as an error carrying it.
function publish(topic, payload, qos, retain, done) {
  if (!client || !client.connected) {
    done('Not connected.', false);
    return;
  }
  client.publish(topic, payload, { qos, retain }, (err, packet) => {
    if (err) {
      done(typeof err.code === 'number'
        ? `Refused by the broker: ${reasonText(err.code)}`
        : `Not published: ${err.message}`, false);
      return;
    }
    if (qos === 0) {
      done('Sent at QoS 0 (no acknowledgement, so a refusal would not show: use QoS 1).', true);
      return;
    }
    const code = packet && typeof packet.reasonCode === 'number' ? packet.reasonCode : 0;
    done(`Published: ${reasonText(code)}`, true);
  });
}

$('publish-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const topic = $('pub-topic').value;
  const why = checkTopicName(topic);
  const result = $('pub-result');
  if (why) {
    result.className = 'error';
    result.textContent = `Not sent: ${why}.`;
    return;
  }
  result.className = '';
  result.textContent = 'Publishing…';
  publish(topic, $('pub-payload').value, Number($('pub-qos').value), $('pub-retain').checked, (text, ok) => {
    result.className = ok ? 'ok' : 'error';
    result.textContent = text;
  });
});

// The LED switch shows the device's retained state, never a guess: a click
// publishes the command and the switch moves when the device reports its
// new state, on this page and on every other one.
$('led').addEventListener('click', (e) => {
  e.preventDefault();
  const want = ledState === true ? 'off' : 'on';
  setText('led-note', `sending ${want}…`);
  publish(dev.ledSet, want, 1, false, (text, ok) => {
    setText('led-note', ok ? `sent ${want}, waiting for the device` : text);
    $('led-note').className = ok ? 'note' : 'error';
  });
});

$('subscribe-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = $('sub-filter').value.trim();
  if (!f || !client) return;
  subscribeFilter(client, f, (ok, why) => {
    setText('sub-result', ok ? `Subscribed to ${f}.` : `Not allowed to subscribe to ${f} (${why}).`);
  });
});

// ---- start -----------------------------------------------------------------

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  start({ anonymous: false, username: $('username').value, password: $('password').value }, true);
});
$('anonymous-button').addEventListener('click', () => start({ anonymous: true }, true));
$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(LOGIN_KEY);
  if (client) client.end(true);
  client = null;
  setConn('disconnected');
  $('password').value = '';
  showLogin();
});

setText('device-name', cfg.devicePrefix);
const saved = savedLogin();
if (saved) {
  start(saved, false);
} else {
  showLogin();
}
