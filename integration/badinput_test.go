package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho "github.com/eclipse/paho.golang/paho"
)

// ownGoroutines matches the stacks of goroutines that serve MQTT
// connections; every bad input must leave their number where it was.
const ownGoroutines = `mochi-mqtt|caddy-mqtt`

// promptly is how soon the server must drop input it can reject on sight:
// well under the 1 s connect_timeout of the base config, so a pass proves
// the server did not just wait for the timeout.
const promptly = 500 * time.Millisecond

// TestBadInput feeds each door input a broker must survive: wrong WebSocket
// frames and subprotocols, non-MQTT bytes, oversized and silent CONNECTs and
// the reserved client id "inline". After every case the connection is
// closed, a normal client still gets a publish round trip through, and no
// goroutine of the broker or its doors is left behind.
func TestBadInput(t *testing.T) {
	c := startCaddy(t, "")

	// Take the baseline with no client connected, then check that one
	// normal session leaves nothing behind either, so a leak found below is
	// the bad input's.
	baseline := c.Goroutines(ownGoroutines)
	assertServing(t, c)
	waitGoroutines(t, c, baseline)

	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			f(t)
			assertServing(t, c)
			waitGoroutines(t, c, baseline)
		})
	}

	// coder/websocket's net.Conn adapter, which the handler reads MQTT
	// through, only accepts binary messages: a text frame ends the session
	// with close status 1003, before and after CONNECT.
	for _, door := range []string{"ws", "wss"} {
		run("text-frame/"+door+"/before-connect", func(t *testing.T) {
			ws := dialWS(t, c, door, "mqtt")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := ws.Write(ctx, websocket.MessageText, connectPacket(4, "text-frame")); err != nil {
				t.Fatal(err)
			}
			wantCloseStatus(t, ctx, ws, websocket.StatusUnsupportedData)
		})
		run("text-frame/"+door+"/after-connect", func(t *testing.T) {
			ws := dialWS(t, c, door, "mqtt")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := ws.Write(ctx, websocket.MessageBinary, connectPacket(4, "text-frame-"+door)); err != nil {
				t.Fatal(err)
			}
			typ, msg, err := ws.Read(ctx)
			if err != nil || typ != websocket.MessageBinary || !bytes.Equal(msg, []byte{0x20, 2, 0, 0}) {
				t.Fatalf("CONNACK: %v %x %v", typ, msg, err)
			}
			if err := ws.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			wantCloseStatus(t, ctx, ws, websocket.StatusUnsupportedData)
		})

		// Offering only other subprotocols is refused before the upgrade,
		// so a browser learns why instead of failing its handshake.
		run("subprotocol/"+door+"/chat", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ws, resp, err := websocket.Dial(ctx, c.URL(door), wsDialOptions(t, c, "chat"))
			if err == nil {
				ws.CloseNow()
				t.Fatalf("upgrade with subprotocol chat succeeded (subprotocol %q)", ws.Subprotocol())
			}
			if resp == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Upgrade") != "" {
				t.Fatalf("got %s (Upgrade %q), want 400 without upgrade", resp.Status, resp.Header.Get("Upgrade"))
			}
		})

		// No Sec-WebSocket-Protocol at all is not refused: the handler only
		// checks offers that exist, and coder/websocket then upgrades
		// without a subprotocol. Clients that send none (some embedded
		// libraries) get a working MQTT session.
		run("subprotocol/"+door+"/none", func(t *testing.T) {
			ws := dialWS(t, c, door)
			if ws.Subprotocol() != "" {
				t.Fatalf("subprotocol %q, want none", ws.Subprotocol())
			}
			conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
			defer conn.Close()
			write(t, conn, connectPacket(5, "no-subprotocol-"+door))
			if code := readConnack(t, conn); code != 0 {
				t.Fatalf("CONNACK reason %#x, want 0", code)
			}
			write(t, conn, []byte{0xe0, 0}) // DISCONNECT
			closedAfter(t, conn, time.Now(), promptly)
		})
	}

	// The tcp route has no matcher, so whatever arrives goes to mochi,
	// which must see that the first packet is not a CONNECT and hang up
	// without waiting for the connect timeout.
	type input struct {
		name  string
		bytes []byte
	}
	garbage := []input{{"http", []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")}}
	rng := rand.New(rand.NewPCG(1, 2)) // fixed seed: a failure can be rerun
	for i := range 3 {
		b := make([]byte, 64)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		// A first byte of type CONNECT would make mochi wait for a body of
		// whatever length the next bytes claim.
		if b[0]>>4 == 1 {
			b[0] ^= 0x80
		}
		garbage = append(garbage, input{fmt.Sprintf("random-%d", i), b})
	}
	for _, g := range garbage {
		run("not-mqtt/tcp/"+g.name, func(t *testing.T) {
			conn := c.Dial(t, "tcp")
			defer conn.Close()
			sent := time.Now()
			write(t, conn, g.bytes)
			closedAfter(t, conn, sent, promptly)
		})
	}

	// The fixed header already says the CONNECT is larger than
	// max_packet_size (64 KiB): the server must hang up at once, not wait
	// for (or buffer) the body.
	for _, door := range []string{"tcp", "ws"} {
		run("oversized-connect/"+door, func(t *testing.T) {
			conn := c.Dial(t, door)
			defer conn.Close()
			head := []byte{0x10}
			head = append(head, varint(64<<10)...) // total packet > 64 KiB
			head = appendString(head, "MQTT")      // start of the body only
			sent := time.Now()
			write(t, conn, head)
			closedAfter(t, conn, sent, promptly)
		})
	}

	// A client that connects and says nothing is dropped after the
	// connect_timeout (1 s), on every door.
	for _, door := range Doors {
		run("silent/"+door, func(t *testing.T) {
			conn := c.Dial(t, door)
			defer conn.Close()
			d := closedAfter(t, conn, time.Now(), 5*time.Second)
			if d < 800*time.Millisecond {
				t.Fatalf("closed after %v, before the 1 s connect timeout", d)
			}
		})
	}

	// "inline" is the in-process client's id; a network client must not
	// take over its session.
	for _, door := range Doors {
		for _, v := range []struct {
			version byte
			want    byte
		}{
			{5, 0x85}, // client identifier not valid
			{4, 0x02}, // identifier rejected
		} {
			run(fmt.Sprintf("inline-id/%s/v%d", door, v.version), func(t *testing.T) {
				conn := c.Dial(t, door)
				defer conn.Close()
				write(t, conn, connectPacket(v.version, "inline"))
				if code := readConnack(t, conn); code != v.want {
					t.Fatalf("CONNACK code %#x, want %#x", code, v.want)
				}
				closedAfter(t, conn, time.Now(), promptly)
			})
		}
	}
}

// assertServing connects a normal MQTT 5 client on tcp, checks that it gets
// its own QoS 1 publish back and disconnects it.
func assertServing(t *testing.T, c *Caddy) {
	t.Helper()
	id := fmt.Sprintf("healthy-%d", time.Now().UnixNano())
	topic := "badinput/healthy/" + id
	v := c.ConnectV5(t, "tcp", id)
	v.Subscribe(t, topic, 1)
	v.Publish(t, topic, 1, false, []byte(id))
	select {
	case m := <-v.Msgs:
		if m.Topic != topic || string(m.Payload) != id {
			t.Fatalf("healthy client got %q on %q", m.Payload, m.Topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("healthy client got nothing back")
	}
	if err := v.Client.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
}

// waitGoroutines waits up to 5 s until Caddy runs no more ownGoroutines
// than baseline; sessions need a moment to unwind after their socket closes.
func waitGoroutines(t *testing.T, c *Caddy, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := c.Goroutines(ownGoroutines)
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines matching %q, baseline %d:\n%s", n, ownGoroutines, baseline, goroutineDump(t, c))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// goroutineDump is the stacks of Caddy's ownGoroutines, to show a leak.
func goroutineDump(t *testing.T, c *Caddy) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=2", c.Ports.Admin))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(ownGoroutines)
	var out []string
	for _, g := range strings.Split(string(b), "\n\n") {
		if re.MatchString(g) {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// wsDialOptions offers subprotocols (none when empty) and trusts the
// internal CA.
func wsDialOptions(t *testing.T, c *Caddy, subprotocols ...string) *websocket.DialOptions {
	tr := &http.Transport{TLSClientConfig: c.TLSConfig()}
	t.Cleanup(tr.CloseIdleConnections)
	return &websocket.DialOptions{Subprotocols: subprotocols, HTTPClient: &http.Client{Transport: tr}}
}

// dialWS upgrades to a WebSocket on door (ws or wss), offering subprotocols.
func dialWS(t *testing.T, c *Caddy, door string, subprotocols ...string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, c.URL(door), wsDialOptions(t, c, subprotocols...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

// wantCloseStatus reads until the server closes the WebSocket and checks
// the close status it gave. Messages before the close (a DISCONNECT) are
// skipped.
func wantCloseStatus(t *testing.T, ctx context.Context, ws *websocket.Conn, want websocket.StatusCode) {
	t.Helper()
	for {
		_, _, err := ws.Read(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != want {
			t.Fatalf("connection ended with %v (status %v), want close status %v", err, got, want)
		}
		return
	}
}

func write(t *testing.T, conn net.Conn, b []byte) {
	t.Helper()
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

// closedAfter reads (and discards) until the server closes conn and returns
// how long after since that happened. It fails the test when conn is still
// open at since+limit.
func closedAfter(t *testing.T, conn net.Conn, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	_ = conn.SetReadDeadline(since.Add(limit))
	buf := make([]byte, 4096)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		// Go by the clock too: on coder/websocket's net.Conn a read
		// deadline ends the read with "context canceled", not a timeout.
		var ne net.Error
		took := time.Since(since)
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || took >= limit {
			t.Fatalf("connection still open %v after the bad input", limit)
		}
		return took
	}
}

// readConnack reads one packet, which must be a CONNACK, and returns its
// return code (MQTT 3) or reason code (MQTT 5).
func readConnack(t *testing.T, conn net.Conn) byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var head [2]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	// A CONNACK is short enough for a one-byte remaining length.
	if head[0] != 0x20 || head[1] < 2 || head[1] > 127 {
		t.Fatalf("not a CONNACK: %x", head)
	}
	body := make([]byte, head[1])
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	return body[1]
}

// connectPacket encodes a CONNECT for protocol level version (4: MQTT
// 3.1.1, 5: MQTT 5) with a clean session, keepalive 30 s, no will, username
// or password, and no properties.
func connectPacket(version byte, clientID string) []byte {
	body := appendString(nil, "MQTT")
	body = append(body, version, 0x02, 0, 30)
	if version >= 5 {
		body = append(body, 0) // property length
	}
	body = appendString(body, clientID)
	return append(append([]byte{0x10}, varint(len(body))...), body...)
}

// varint is MQTT's variable byte integer, used for remaining lengths.
func varint(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// appendString appends an MQTT UTF-8 string: a 2-byte length and the bytes.
func appendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}
