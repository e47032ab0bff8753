package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestMalformedInput sends protocol violations through the tcp and ws doors,
// before and after CONNECT, with MQTT 5 and 3.1.1, and checks for each that
// the server closes the connection promptly (well before the 1 s connect
// timeout and the 30 s keepalive), sends the MQTT 5 DISCONNECT reason code
// where mochi sends one, and that afterwards a normal client still gets a
// round trip and no goroutine is left. TestBadInput covers text frames,
// subprotocols, non-MQTT bytes, an oversized CONNECT and silent sockets.
//
// What the broker answers, precisely (want below):
//   - Errors found while reading a packet after CONNECT (fixed header flags,
//     reserved types, remaining length varint, remaining length over
//     max_packet_size, undecodable bodies such as an invalid UTF-8 topic)
//     get a DISCONNECT for MQTT 5 (0x81 malformed, 0x95 packet too large;
//     MQTT 5 §4.13 makes it a SHOULD) before the connection closes; mochi
//     alone closes without one (broker/readcheck.go, keepalive.go).
//   - Errors found when processing a decoded packet get a DISCONNECT with
//     reason code for MQTT 5: a second CONNECT gives 0x82 (protocol error),
//     a wildcard in a PUBLISH topic 0x90 (topic name invalid). MQTT 3.1.1
//     has no server DISCONNECT: the connection is closed.
//   - Before CONNECT nothing is ever sent back (no CONNACK): the first
//     packet not being a CONNECT, or a CONNECT mochi cannot read, closes the
//     connection. A CONNECT with a wrong protocol name is answered with a
//     CONNACK refusal (see the cases).
func TestMalformedInput(t *testing.T) {
	c := startCaddy(t, "")
	baseline := c.Goroutines(ownGoroutines)
	assertServing(t, c)
	waitGoroutines(t, c, baseline)

	type tc struct {
		name string
		v    byte // protocol version spoken, 4 or 5
		// connect: a CONNECT of version v is sent (and accepted) first.
		connect bool
		bad     []byte
		// want are the packets the server sends after the bad bytes, as
		// "type:reason" (DISCONNECT 0xe0, CONNACK 0x20); nil: none.
		want []string
		// limit is how long the server may take to close (promptly if 0).
		limit time.Duration
	}
	pub := func(topic []byte) []byte { // QoS 0 PUBLISH, no properties
		body := binary.BigEndian.AppendUint16(nil, uint16(len(topic)))
		body = append(body, topic...)
		return body
	}
	publish := func(version byte, topic []byte) []byte {
		body := pub(topic)
		if version >= 5 {
			body = append(body, 0) // property length
		}
		body = append(body, "payload"...)
		return append(append([]byte{0x30}, varint(len(body))...), body...)
	}
	wrongName := func(version byte) []byte {
		p := connectPacket(version, "wrong-name")
		copy(p[4:8], "MQTX") // 0x10, length, 0x00 0x04, "MQTT"
		return p
	}
	var cases []tc
	for _, v := range []byte{4, 5} {
		// Before CONNECT.
		cases = append(cases,
			tc{"reserved-type-0/first", v, false, []byte{0x00, 0x00}, nil, 0},
			tc{"reserved-type-15/first", v, false, []byte{0xf0, 0x00}, nil, 0},
			tc{"connect-bad-flags", v, false, append([]byte{0x11}, connectPacket(v, "flags")[1:]...), nil, 0},
			tc{"publish-before-connect", v, false, publish(v, []byte("a/b")), nil, 0},
			// Remaining length 268435455 + more: the 5th byte overflows.
			tc{"connect-varint-5-bytes-ff", v, false, []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}, nil, 0},
			// Five continuation bytes that add nothing to the value: a
			// varint has at most four bytes, so this is malformed at the
			// fifth byte. mochi's DecodeLength only checks the value and
			// would keep reading until the CONNECT timeout; the broker's
			// framing check closes it at once.
			tc{"connect-varint-5-bytes-80", v, false, []byte{0x10, 0x80, 0x80, 0x80, 0x80, 0x80}, nil, 0},
		)
		// A CONNECT with protocol name "MQTX" is refused with a CONNACK:
		// MQTT 5 reason 0x82 (protocol error; the spec suggests 0x84 but
		// leaves it a MAY), MQTT 3.1.1 return code 1 (unacceptable protocol
		// version). mochi sent the MQTT 5 code 0x82 to MQTT 3.1.1 clients,
		// which is not a 3.1.1 return code; broker/hook.go OnPacketEncode
		// maps it.
		wantName := "0x20:0x82"
		if v == 4 {
			wantName = "0x20:0x01"
		}
		cases = append(cases, tc{"wrong-protocol-name", v, false, wrongName(v), []string{wantName}, 0})
		if v == 4 {
			// An empty client id without clean session must be refused
			// with return code 2 [MQTT-3.1.3-8]; mochi sent 0x80.
			p := connectPacket(4, "")
			p[9] = 0x00 // connect flags: no clean session
			cases = append(cases, tc{"empty-id-persistent", v, false, p, []string{"0x20:0x02"}, 0})
		}

		// After CONNECT.
		disc := func(code byte) []string {
			if v < 5 {
				return nil // MQTT 3.1.1: just closed
			}
			return []string{fmt.Sprintf("0xe0:%#02x", code)}
		}
		cases = append(cases,
			// A packet type a client never sends is a protocol error (0x82).
			tc{"reserved-type-0", v, true, []byte{0x00, 0x00}, disc(0x82), 0},
			tc{"subscribe-bad-flags", v, true, []byte{0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00}, disc(0x81), 0},
			tc{"publish-qos-3", v, true, []byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}, disc(0x81), 0},
			tc{"pingreq-bad-flags", v, true, []byte{0xc1, 0x00}, disc(0x81), 0},
			tc{"varint-5-bytes-ff", v, true, []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, disc(0x81), 0},
			// The same after CONNECT: closed at once, not by the keepalive.
			tc{"varint-5-bytes-80", v, true, []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x80}, disc(0x81), 0},
			// The header says 1 MiB (max_packet_size is 64 KiB) and no
			// body follows: the server must not wait for it.
			tc{"remaining-length-over-limit", v, true, append([]byte{0x30}, varint(1<<20)...), disc(0x95), 0},
			tc{"second-connect", v, true, connectPacket(v, "second"), disc(0x82), 0},
			tc{"topic-invalid-utf8", v, true, publish(v, []byte{'a', '/', 0xc3, 0x28}), disc(0x81), 0},
			tc{"topic-nul", v, true, publish(v, []byte{'a', 0x00, 'b'}), disc(0x81), 0},
			tc{"topic-wildcard-plus", v, true, publish(v, []byte("a/+/b")), disc(0x90), 0},
			tc{"topic-wildcard-hash", v, true, publish(v, []byte("a/#")), disc(0x90), 0},
		)
		if v == 4 {
			// 15 is AUTH in MQTT 5 and reserved in 3.1.1.
			cases = append(cases, tc{"reserved-type-15", v, true, []byte{0xf0, 0x00}, nil, 0})
		}
	}

	for _, door := range []string{"tcp", "ws"} {
		for i, k := range cases {
			name := fmt.Sprintf("%s/v%d/%s", door, k.v, k.name)
			t.Run(name, func(t *testing.T) {
				conn := c.Dial(t, door)
				defer conn.Close()
				if k.connect {
					p := connectPacket(k.v, fmt.Sprintf("malformed-%s-%d", door, i))
					if k.limit > 0 {
						p[10], p[11] = 0, 1 // keepalive 1 s
					}
					write(t, conn, p)
					if code := readConnack(t, conn); code != 0 {
						t.Fatalf("CONNACK %#x", code)
					}
				}
				sent := time.Now()
				write(t, conn, k.bad)
				limit := promptly
				if k.limit > 0 {
					limit = k.limit
				}
				got, took := packetsUntilClosed(t, conn, sent, limit)
				t.Logf("closed after %v, server sent %v", took.Round(time.Millisecond), got)
				if fmt.Sprint(got) != fmt.Sprint(k.want) {
					t.Errorf("server sent %v before closing, want %v", got, k.want)
				}
				assertServing(t, c)
				waitGoroutines(t, c, baseline)
			})
		}
	}
}

// packetsUntilClosed reads MQTT packets until the server closes conn and
// returns them as "type:reason" strings (the first body byte after any
// variable header that precedes it: the reason code of DISCONNECT and
// CONNACK), with the time from since to the close. It fails when conn is
// still open at since+limit.
func packetsUntilClosed(t *testing.T, conn net.Conn, since time.Time, limit time.Duration) ([]string, time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(since.Add(limit))
	var got []string
	for {
		typ, body, err := readPacket(conn)
		if err != nil {
			// A deadline is a timeout on TCP but a canceled context on
			// coder/websocket's net.Conn: go by the clock.
			var ne net.Error
			if (errors.As(err, &ne) && ne.Timeout()) || !time.Now().Before(since.Add(limit)) {
				t.Fatalf("connection still open %v after the bad input (got %v)", limit, got)
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				t.Logf("connection ended with %v", err)
			}
			return got, time.Since(since)
		}
		s := fmt.Sprintf("%#02x", typ&0xf0)
		switch typ & 0xf0 {
		case 0x20: // CONNACK: flags, reason
			if len(body) >= 2 {
				s += fmt.Sprintf(":%#02x", body[1])
			}
		case 0xe0: // DISCONNECT: reason (none means 0)
			r := byte(0)
			if len(body) >= 1 {
				r = body[0]
			}
			s += fmt.Sprintf(":%#02x", r)
		}
		got = append(got, s)
	}
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(r io.Reader) (byte, []byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, nil, err
	}
	first := b[0]
	n, mult := 0, 1
	for i := 0; ; i++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n += int(b[0]&0x7f) * mult
		mult *= 128
		if b[0]&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("remaining length longer than 4 bytes")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return first, body, nil
}
