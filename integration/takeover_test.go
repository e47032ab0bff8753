package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// TestSessionTakeover connects the same client id twice, over different
// doors and protocol versions. The first connection is ended: an MQTT 5
// client is told why with DISCONNECT 0x8E (session taken over), an MQTT 3.1.1
// client, which has no server DISCONNECT, sees the connection closed. The
// second connection is the live session: it gets messages, and
// $SYS/broker/clients/connected counts one client for the id.
func TestSessionTakeover(t *testing.T) {
	c := startCaddy(t, "sys_interval 1s")
	obs := c.ConnectV5(t, "tcp", "takeover-observer")
	connected := sysWatcher(t, obs, "$SYS/broker/clients/connected")
	connected.wait(t, "1") // the observer itself

	for _, k := range []struct {
		v1, v2       byte
		door1, door2 string
	}{
		{5, 5, "tcp", "ws"},
		{5, 4, "ws", "tcp"},
		{4, 5, "tcp", "wss"},
		{4, 4, "tls", "tcp"},
	} {
		t.Run(fmt.Sprintf("v%d-%s/v%d-%s", k.v1, k.door1, k.v2, k.door2), func(t *testing.T) {
			id := fmt.Sprintf("takeover-%d-%s-%d-%s", k.v1, k.door1, k.v2, k.door2)
			first := rawSession(t, c, k.door1, k.v1, id)
			connected.wait(t, "2")
			second := rawSession(t, c, k.door2, k.v2, id)

			got, took := packetsUntilClosed(t, first.conn, time.Now(), 2*time.Second)
			want := "[]"
			if k.v1 == 5 {
				want = "[0xe0:0x8e]"
			}
			if fmt.Sprint(got) != want {
				t.Errorf("first connection got %v before closing, want %s", got, want)
			}
			t.Logf("first connection closed %v after the second CONNACK", took.Round(time.Millisecond))

			second.subscribe(t, "takeover/"+id)
			obs.Publish(t, "takeover/"+id, 0, false, []byte("to the live session"))
			second.wantPublish(t, "takeover/"+id, "to the live session")
			connected.wait(t, "2")
			second.disconnect(t)
			connected.wait(t, "1")
		})
	}

	// A reconnect storm: 50 connections with one client id from 5
	// goroutines, over tcp and ws, MQTT 5 and 3.1.1, none closed by the
	// client. Exactly one must stay connected, be the live session (it
	// gets messages), and be counted once.
	t.Run("storm", func(t *testing.T) {
		baseline := c.Goroutines(`broker\.\(\*Broker\)\.Serve`)
		for round := range 3 {
			id := fmt.Sprintf("takeover-storm-%d", round)
			var mu sync.Mutex
			var sessions []*raw
			var wg sync.WaitGroup
			start := time.Now()
			for g := range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 10 {
						door := []string{"tcp", "ws"}[(g+i)%2]
						v := []byte{4, 5}[i%2]
						s := rawSession(t, c, door, v, id)
						mu.Lock()
						sessions = append(sessions, s)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			t.Logf("round %d: 50 connects in %v", round, time.Since(start).Round(time.Millisecond))

			// Every connection but one is closed by the server.
			var live []*raw
			for _, s := range sessions {
				if s.alive(t) {
					live = append(live, s)
				}
			}
			if len(live) != 1 {
				t.Fatalf("round %d: %d connections still alive after the storm, want 1", round, len(live))
			}
			s := live[0]
			topic := "takeover/" + id
			s.subscribe(t, topic)
			obs.Publish(t, topic, 0, false, []byte("storm survivor"))
			s.wantPublish(t, topic, "storm survivor")
			connected.wait(t, "2")
			if n := c.Goroutines(`broker\.\(\*Broker\)\.Serve`); n != baseline+1 {
				t.Errorf("round %d: %d broker sessions, want %d", round, n, baseline+1)
			}
			s.disconnect(t)
			connected.wait(t, "1")
		}
	})
}

// raw is an MQTT session spoken byte by byte, to see exactly what the server
// sends.
type raw struct {
	conn    net.Conn
	v       byte
	door    string
	id      string
	packets uint16
}

// rawSession dials door and connects with a clean session as client id.
func rawSession(t testing.TB, c *Caddy, door string, v byte, id string) *raw {
	t.Helper()
	conn := c.Dial(t, door)
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(connectPacket(v, id)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, body, err := readPacket(conn)
	if err != nil || typ != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("v%d %s %s: CONNACK %#x %x %v", v, door, id, typ, body, err)
	}
	return &raw{conn: conn, v: v, door: door, id: id}
}

func (r *raw) send(t testing.TB, p []byte) {
	t.Helper()
	_ = r.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.conn.Write(p); err != nil {
		t.Fatalf("%s v%d: %v", r.door, r.v, err)
	}
}

// next reads the next packet, failing after 5 s.
func (r *raw) next(t testing.TB) (byte, []byte) {
	t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, body, err := readPacket(r.conn)
	if err != nil {
		t.Fatalf("%s v%d %s: %v", r.door, r.v, r.id, err)
	}
	return typ, body
}

// alive sends PINGREQ and reports whether PINGRESP comes back; a closed
// connection (possibly after a DISCONNECT) is not alive.
func (r *raw) alive(t testing.TB) bool {
	t.Helper()
	_ = r.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.conn.Write([]byte{0xc0, 0}); err != nil {
		return false
	}
	_ = r.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		typ, _, err := readPacket(r.conn)
		if err != nil {
			return false
		}
		if typ == 0xd0 {
			return true
		}
		// A DISCONNECT 0x8E from the takeover may come first.
	}
}

// subscribe subscribes at QoS 0 and waits for the grant.
func (r *raw) subscribe(t testing.TB, filter string) {
	t.Helper()
	r.packets++
	body := binary.BigEndian.AppendUint16(nil, r.packets)
	if r.v >= 5 {
		body = append(body, 0)
	}
	body = appendString(body, filter)
	body = append(body, 0) // QoS 0
	r.send(t, append(append([]byte{0x82}, varint(len(body))...), body...))
	typ, ack := r.next(t)
	if typ != 0x90 || ack[len(ack)-1] != 0 {
		t.Fatalf("%s v%d: SUBACK %#x %x", r.door, r.v, typ, ack)
	}
}

// wantPublish reads the next packet, which must be a PUBLISH of payload on
// topic.
func (r *raw) wantPublish(t testing.TB, topic, payload string) {
	t.Helper()
	typ, body := r.next(t)
	if typ&0xf0 != 0x30 {
		t.Fatalf("%s v%d: got packet %#x, want PUBLISH", r.door, r.v, typ)
	}
	n := int(binary.BigEndian.Uint16(body))
	got := string(body[2 : 2+n])
	rest := body[2+n:]
	if r.v >= 5 {
		rest = rest[1+int(rest[0]):] // properties, short here
	}
	if got != topic || string(rest) != payload {
		t.Fatalf("%s v%d: got %q on %q, want %q on %q", r.door, r.v, rest, got, payload, topic)
	}
}

func (r *raw) disconnect(t testing.TB) {
	t.Helper()
	r.send(t, []byte{0xe0, 0})
	_ = r.conn.Close()
}

// sys follows one $SYS topic.
type sys struct {
	topic string
	mu    sync.Mutex
	last  string
	ch    chan string
}

// sysWatcher subscribes v to a $SYS topic (the broker publishes them every
// sys_interval) and records its values.
func sysWatcher(t testing.TB, v *V5, topic string) *sys {
	t.Helper()
	s := &sys{topic: topic, ch: make(chan string, 1)}
	v.Client.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Topic == topic {
			s.mu.Lock()
			s.last = string(pr.Packet.Payload)
			s.mu.Unlock()
			select {
			case s.ch <- string(pr.Packet.Payload):
			default:
			}
			return true, nil
		}
		return false, nil
	})
	v.Subscribe(t, topic, 0)
	return s
}

// value returns the latest value, waiting up to 5 s for the first.
func (s *sys) value(t testing.TB) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		v := s.last
		s.mu.Unlock()
		if v != "" {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no value on %s", s.topic)
	return ""
}

// int returns the latest value as a number.
func (s *sys) int(t testing.TB) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s.value(t), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", s.topic, err)
	}
	return n
}

// wait waits up to 5 s for the topic to say want.
func (s *sys) wait(t testing.TB, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		v := s.last
		s.mu.Unlock()
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %q after 5 s, want %q", s.topic, v, want)
		}
		select {
		case <-s.ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
