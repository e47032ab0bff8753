package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// flowCaddyfile sets the flow limits globally (the WSS door uses those) and
// differently in the plain TCP door's layer4 mqtt handler and in the plain
// WebSocket site's mqtt directive, which must win there.
var flowCaddyfile = derive(baseCaddyfile,
	"{{.Extra}}", "max_inflight_messages 3\n\t\tmax_queued_messages 4",
	`		127.0.0.1:{{.TCP}} {
			route {
				mqtt
			}`, `		127.0.0.1:{{.TCP}} {
			route {
				mqtt {
					max_inflight_messages 2
					max_queued_messages 3
				}
			}`,
	"http://localhost:{{.HTTP}} {\n\tmqtt /mqtt\n", `http://localhost:{{.HTTP}} {
	mqtt /mqtt {
		max_inflight_messages 1
		max_queued_messages 2
	}
`)

// flowResult is what a subscriber that acknowledges nothing at first sees
// of 10 QoS 1 messages: how many arrive unacknowledged, and all it gets
// once it acknowledges each message as it comes.
type flowResult struct {
	unacked  int
	payloads string
}

// TestFlowLimitsLikeMosquitto: max_inflight_messages and
// max_queued_messages in the global mqtt block and in a door's own block
// (the door's winning), checked on a live subscriber and on a persistent
// session that was offline, against mosquitto 2 with the same values.
func TestFlowLimitsLikeMosquitto(t *testing.T) {
	c := startCaddyWith(t, flowCaddyfile, CaddyConfig{Ports: freePorts(t)})
	pubAddr := fmt.Sprintf("127.0.0.1:%d", c.Ports.TCP)

	door := func(name string) func() net.Conn { return func() net.Conn { return c.Dial(t, name) } }
	cases := []struct {
		name    string
		dial    func() net.Conn
		offline bool
		want    flowResult
	}{
		{"tcp door (2, 3), live", door("tcp"), false, flowResult{2, "[0 1 2 3 4]"}},
		{"tcp door (2, 3), offline", door("tcp"), true, flowResult{2, "[0 1 2]"}},
		{"ws door (1, 2), live", door("ws"), false, flowResult{1, "[0 1 2]"}},
		{"ws door (1, 2), offline", door("ws"), true, flowResult{1, "[0 1]"}},
		{"wss door, global (3, 4), live", door("wss"), false, flowResult{3, "[0 1 2 3 4 5 6]"}},
		{"wss door, global (3, 4), offline", door("wss"), true, flowResult{3, "[0 1 2 3]"}},
	}
	for i, tc := range cases {
		got := flowScenario(t, tc.dial, pubAddr, fmt.Sprintf("flow-%d", i), tc.offline)
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}

	maddr := startMosquitto(t, "allow_anonymous true\nmax_inflight_messages 2\nmax_queued_messages 3\n")
	dialM := func() net.Conn {
		conn, err := net.Dial("tcp", maddr)
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	for i, tc := range cases[:2] {
		got := flowScenario(t, dialM, maddr, fmt.Sprintf("mflow-%d", i), tc.offline)
		if got != tc.want {
			t.Errorf("mosquitto, %s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// flowScenario subscribes at QoS 1 through dial, has mosquitto_pub publish
// 10 QoS 1 messages to pubAddr (after the subscriber disconnected, when
// offline), and reads what arrives, first without acknowledging.
func flowScenario(t *testing.T, dial func() net.Conn, pubAddr, id string, offline bool) flowResult {
	t.Helper()
	topic := "flow/" + id
	sub := flowConnect(t, dial, id, !offline)
	sub.subscribeQoS1(t, topic)
	if offline {
		sub.disconnect(t)
		time.Sleep(200 * time.Millisecond) // let the broker see it
	}
	host, port, _ := net.SplitHostPort(pubAddr)
	pub := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", topic, "-l")
	pub.Stdin = strings.NewReader("0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n")
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	if offline {
		sub = flowConnect(t, dial, id, false)
	}

	var res flowResult
	var pending []uint16
	var got []string
	// Packets are read by one goroutine and waited for here: a read
	// deadline would end a WebSocket connection.
	type packet struct {
		typ  byte
		body []byte
		err  error
	}
	packets := make(chan packet, 16)
	go func() {
		for {
			_ = sub.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			typ, body, err := readPacket(sub.conn)
			packets <- packet{typ, body, err}
			if err != nil {
				return
			}
		}
	}()
	read := func(wait time.Duration) bool {
		var p packet
		select {
		case p = <-packets:
		case <-time.After(wait):
			return false
		}
		if p.err != nil {
			t.Fatalf("%s: %v", id, p.err)
		}
		if p.typ&0xf0 != 0x30 {
			t.Fatalf("%s: packet %#x, want PUBLISH", id, p.typ)
		}
		n := int(binary.BigEndian.Uint16(p.body))
		pending = append(pending, binary.BigEndian.Uint16(p.body[2+n:]))
		got = append(got, string(p.body[4+n:]))
		return true
	}
	for read(500 * time.Millisecond) {
	}
	res.unacked = len(pending)
	for len(pending) > 0 {
		sub.send(t, []byte{0x40, 2, byte(pending[0] >> 8), byte(pending[0])})
		pending = pending[1:]
		for read(300 * time.Millisecond) {
		}
	}
	res.payloads = fmt.Sprint(got)
	sub.disconnect(t)
	return res
}

// flowConnect connects an MQTT 3.1.1 session through conn.
func flowConnect(t *testing.T, dial func() net.Conn, id string, clean bool) *raw {
	t.Helper()
	conn := dial()
	t.Cleanup(func() { conn.Close() })
	connect := connectPacket(4, id)
	if !clean {
		connect[9] = 0 // the connect flags: clean session off
	}
	r := &raw{conn: conn, v: 4, door: "flow", id: id}
	r.send(t, connect)
	if typ, ack := r.next(t); typ != 0x20 || ack[1] != 0 {
		t.Fatalf("%s: CONNACK %#x %x", id, typ, ack)
	}
	return r
}

func (r *raw) subscribeQoS1(t testing.TB, filter string) {
	t.Helper()
	r.packets++
	body := binary.BigEndian.AppendUint16(nil, r.packets)
	body = append(appendString(body, filter), 1)
	r.send(t, append(append([]byte{0x82}, varint(len(body))...), body...))
	if typ, ack := r.next(t); typ != 0x90 || ack[len(ack)-1] != 1 {
		t.Fatalf("%s: SUBACK %#x %x", r.id, typ, ack)
	}
}
