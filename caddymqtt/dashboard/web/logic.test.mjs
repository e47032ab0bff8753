// Unit tests of the dashboard's logic (../assets/logic.mjs), run with
// node's test runner: `node --test caddymqtt/dashboard/web/` (the Go test
// TestPageLogic runs it too).
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  reasonText, isFailure, connectErrorText, websocketURL, checkTopicName, decodePayload,
  parseNumber, parseLedState, deviceTopics, deviceFilter, formatAge, truncate, Series, Rate,
  TopicTree, hex,
} from '../assets/logic.mjs';

const bytes = (s) => new TextEncoder().encode(s);

test('reason codes read as the spec names them', () => {
  assert.equal(reasonText(0x87), '0x87 Not authorized');
  assert.equal(reasonText(0x86), '0x86 Bad user name or password');
  assert.equal(reasonText(0x10), '0x10 No matching subscribers');
  assert.equal(reasonText(0x7f), '0x7f Unknown reason code');
  assert.equal(reasonText(256), 'unknown reason');
  assert.equal(reasonText(undefined), 'unknown reason');
  assert.equal(hex(5), '0x05');
  assert.ok(isFailure(0x80) && isFailure(0x87));
  assert.ok(!isFailure(0x10) && !isFailure(0) && !isFailure(undefined));
});

test('connect errors: refusals name the reason, the rest is a network failure', () => {
  assert.equal(connectErrorText({ code: 0x86, message: 'x' }), 'Login refused: 0x86 Bad user name or password');
  assert.equal(connectErrorText({ code: 0x87 }), 'Login refused: 0x87 Not authorized');
  assert.equal(connectErrorText({ code: 4 }), 'Login refused: bad user name or password');
  assert.equal(connectErrorText({ code: 0x9f }), 'Connection refused: 0x9f Connection rate exceeded');
  assert.equal(connectErrorText(new Error('socket hang up')), 'Connection failed: socket hang up');
});

test('the WebSocket URL follows the page: wss on https, same host and port', () => {
  assert.equal(websocketURL('/mqtt', { protocol: 'https:', host: 'localhost:8443' }), 'wss://localhost:8443/mqtt');
  assert.equal(websocketURL('/mqtt', { protocol: 'http:', host: 'h' }), 'ws://h/mqtt');
  assert.equal(websocketURL('mqtt', { protocol: 'https:', host: 'h' }), 'wss://h/mqtt');
  assert.equal(websocketURL('wss://b.example:9/m', { protocol: 'https:', host: 'h' }), 'wss://b.example:9/m');
});

test('topic names: no wildcards, not empty, no NUL, at most 65535 bytes', () => {
  assert.equal(checkTopicName('a/b'), '');
  assert.equal(checkTopicName('/'), '');
  assert.match(checkTopicName(''), /empty/);
  assert.match(checkTopicName('a/+'), /wildcard/);
  assert.match(checkTopicName('a/#'), /wildcard/);
  assert.match(checkTopicName('a\u0000b'), /NUL/);
  assert.match(checkTopicName('é'.repeat(32768)), /65535/);
  assert.equal(checkTopicName('a'.repeat(65535)), '');
});

test('payloads: UTF-8 as text, anything else as bounded hex', () => {
  assert.deepEqual(decodePayload(bytes('21.5 °C')), { text: '21.5 °C', binary: false });
  assert.deepEqual(decodePayload(new Uint8Array([0xff, 0x00, 0x10])), { text: '0xff0010', binary: true });
  const big = decodePayload(new Uint8Array(100).fill(0xfe));
  assert.ok(big.binary);
  assert.equal(big.text, '0x' + 'fe'.repeat(64) + '…');
  assert.deepEqual(decodePayload(new Uint8Array(0)), { text: '', binary: false });
});

test('numbers: plain decimals and single-field JSON; nothing else', () => {
  assert.equal(parseNumber('21.5'), 21.5);
  assert.equal(parseNumber(' -3 '), -3);
  assert.equal(parseNumber('1e3'), 1000);
  assert.equal(parseNumber('.5'), 0.5);
  assert.equal(parseNumber('{"temperature": 21.5, "unit": "C"}'), 21.5);
  for (const s of ['', 'on', '0x10', '2026-11-26T10:10:52Z', '1,5', 'NaN', 'Infinity', '1e999',
    '{"a":1,"b":2}', '{bad json', '[1]', '12abc']) {
    assert.equal(parseNumber(s), null, s);
  }
});

test('LED state: on/off/1/0 in any case, surrounding space ignored', () => {
  assert.equal(parseLedState('on'), true);
  assert.equal(parseLedState(' ON\n'), true);
  assert.equal(parseLedState('1'), true);
  assert.equal(parseLedState('Off'), false);
  assert.equal(parseLedState('0'), false);
  assert.equal(parseLedState('toggle'), null);
  assert.equal(parseLedState(''), null);
  assert.equal(parseLedState(undefined), null);
});

test('device topics are the firmware\'s (firmware/README.md)', () => {
  assert.deepEqual(deviceTopics('async-mqtt/ESP8266'), {
    pub: 'async-mqtt/ESP8266_Pub',
    tick: 'async-mqtt/ESP8266_tic',
    ledSet: 'async-mqtt/ESP8266/led/set',
    ledState: 'async-mqtt/ESP8266/led/state',
    status: 'async-mqtt/ESP8266/status',
  });
  assert.equal(deviceFilter('async-mqtt/ESP8266'), 'async-mqtt/#');
  assert.equal(deviceFilter('dev'), 'dev/#');
});

test('ages and truncation', () => {
  assert.equal(formatAge(0), 'now');
  assert.equal(formatAge(999), 'now');
  assert.equal(formatAge(NaN), 'now');
  assert.equal(formatAge(1000), '1 s');
  assert.equal(formatAge(59_999), '59 s');
  assert.equal(formatAge(60_000), '1 min');
  assert.equal(formatAge(3_600_000), '1 h');
  assert.equal(formatAge(47 * 3_600_000), '47 h');
  assert.equal(formatAge(49 * 3_600_000), '2 d');
  assert.equal(truncate('abc', 3), 'abc');
  assert.equal(truncate('abcd', 3), 'ab…');
  assert.equal(truncate('😀😀😀😀', 3), '😀😀…');
});

test('a series keeps the last points, in seconds', () => {
  const s = new Series(3);
  for (let i = 1; i <= 5; i++) s.push(i * 1000, i * 10);
  assert.equal(s.length, 3);
  assert.deepEqual(s.data(), [[3, 4, 5], [30, 40, 50]]);
});

test('a series of several values keeps its columns aligned; missing is null', () => {
  const s = new Series(2, 2);
  s.push(1000, 1, 10);
  s.push(2000, 2);
  s.push(3000, undefined, 30);
  assert.deepEqual(s.data(), [[2, 3], [2, null], [null, 30]]);
});

test('a rate differentiates a counter and starts over when it goes down', () => {
  const r = new Rate();
  assert.equal(r.push(0, 100), null);
  assert.equal(r.push(2000, 120), 10);
  assert.equal(r.push(3000, 120), 0);
  assert.equal(r.push(4000, 5), null); // broker restarted
  assert.equal(r.push(5000, 8), 3);
  assert.equal(r.push(5000, 9), null); // no time passed
});

test('the topic tree keeps the last message per topic and lays out levels', () => {
  const t = new TopicTree();
  t.update('b', bytes('x'), { now: 1 });
  t.update('a/b/c', bytes('21.5'), { retain: true, qos: 1, now: 2 });
  t.update('a/b', bytes('on'), { now: 3 });
  t.update('a/b', bytes('off'), { now: 4 });
  assert.equal(t.size, 3);
  const e = t.get('a/b');
  assert.equal(e.text, 'off');
  assert.equal(e.count, 2);
  assert.equal(e.time, 4);
  assert.equal(e.number, null);
  assert.equal(t.get('a/b/c').number, 21.5);
  assert.equal(t.get('a/b/c').retain, true);
  assert.deepEqual(
    t.rows().map((r) => [r.path, r.depth, r.name, r.entry ? r.entry.text : null]),
    [['a', 0, 'a', null], ['a/b', 1, 'b', 'off'], ['a/b/c', 2, 'c', '21.5'], ['b', 0, 'b', 'x']],
  );
});

test('the topic tree: empty levels, $SYS, and clearing a retained message', () => {
  const t = new TopicTree();
  t.update('/x', bytes('1'));
  t.update('a//b', bytes('2'));
  t.update('$SYS/broker/uptime', bytes('3'));
  assert.deepEqual(t.rows().map((r) => r.path), ['', '/x', '$SYS', '$SYS/broker', '$SYS/broker/uptime', 'a', 'a/', 'a//b']);
  assert.equal(t.update('a//b', new Uint8Array(0), { retain: true }), null);
  assert.equal(t.get('a//b'), undefined);
  // An empty message that is not retained is a message like any other.
  assert.equal(t.update('/x', new Uint8Array(0)).text, '');
});

test('the topic tree is bounded: the least recently updated topic goes', () => {
  const t = new TopicTree(3);
  for (const topic of ['a', 'b', 'c']) t.update(topic, bytes('1'));
  t.update('a', bytes('2')); // a is now the most recent
  t.update('d', bytes('1'));
  assert.equal(t.size, 3);
  assert.deepEqual([...t.topics.keys()].sort(), ['a', 'c', 'd']);
});
