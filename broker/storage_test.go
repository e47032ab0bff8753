package broker

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// serveStorageTCP feeds the broker from a loopback listener until the test ends.
func serveStorageTCP(t *testing.T, b *Broker) string {
	t.Helper()
	return "tcp://" + serveDoor(t, b, ConnInfo{Door: DoorTCP})
}

func storageConnectV3(t *testing.T, url, id string, clean bool, msgs chan<- string) pahov3.Client {
	t.Helper()
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetKeepAlive(30 * time.Second)
	if msgs != nil {
		opts.SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			msgs <- m.Topic() + " " + string(m.Payload())
		})
	}
	c := pahov3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func storageWait(t *testing.T, tok pahov3.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

func newStorageBroker(t *testing.T, st Storage) *Broker {
	t.Helper()
	return newBroker(t, Options{Storage: st}, AnonymousPolicy{Allow: true})
}

// expectInOrder reads n messages "topic i" with i counting from 0.
func storageExpectInOrder(t *testing.T, msgs <-chan string, topic string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case m := <-msgs:
			if want := fmt.Sprintf("%s %d", topic, i); m != want {
				t.Fatalf("message %d: got %q, want %q", i, m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d messages", i, n)
		}
	}
}

// TestResumeKeepsOrder queues QoS 1 messages for an offline persistent
// session within the same second; mochi alone resends them in random order.
func TestResumeKeepsOrder(t *testing.T) {
	b := newStorageBroker(t, Storage{})
	url := serveStorageTCP(t, b)
	sub := storageConnectV3(t, url, "order-sub", false, nil)
	storageWait(t, sub.Subscribe("order/#", 1, nil), "subscribe")
	sub.Disconnect(100)

	pub := storageConnectV3(t, url, "order-pub", true, nil)
	const n = 500
	for i := 0; i < n; i++ {
		storageWait(t, pub.Publish("order/a", 1, false, fmt.Sprint(i)), "publish")
	}
	// mochi acknowledges a publish before it queues it (without storage):
	// wait until all are queued, so none is published during the resume.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl, ok := b.Server().Clients.Get("order-sub")
		if ok && cl.State.Inflight.Len() == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("messages not queued for the offline subscriber")
		}
		time.Sleep(time.Millisecond)
	}
	msgs := make(chan string, n)
	storageConnectV3(t, url, "order-sub", false, msgs)
	storageExpectInOrder(t, msgs, "order/a", n)
}

// TestStorageSurvivesRestart: a persistent session, its queued QoS 1
// messages and a retained message come back from the bolt file in a new
// broker.
func TestStorageSurvivesRestart(t *testing.T) {
	st := Storage{Kind: StorageBolt, Path: filepath.Join(t.TempDir(), "mqtt", "broker.bolt")}
	b1, err := New(Options{Storage: st}, AnonymousPolicy{Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	url := serveStorageTCP(t, b1)
	sub := storageConnectV3(t, url, "st-sub", false, nil)
	storageWait(t, sub.Subscribe("st/#", 1, nil), "subscribe")
	sub.Disconnect(100)
	pub := storageConnectV3(t, url, "st-pub", true, nil)
	storageWait(t, pub.Publish("retained/x", 1, true, "kept"), "retain")
	const n = 300
	for i := 0; i < n; i++ {
		storageWait(t, pub.Publish("st/a", 1, false, fmt.Sprint(i)), "publish")
	}

	// A second broker cannot open the same file while the first holds it.
	if _, err := New(Options{Storage: Storage{Kind: StorageBolt, Path: st.Path, LockTimeout: 100 * time.Millisecond}}, nil); err == nil ||
		!strings.Contains(err.Error(), "locked") {
		t.Fatalf("second broker on the same file: %v", err)
	}
	if err := b1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	b2 := newStorageBroker(t, st)
	url = serveStorageTCP(t, b2)
	msgs := make(chan string, n+10)
	storageConnectV3(t, url, "st-sub", false, msgs)
	storageExpectInOrder(t, msgs, "st/a", n)

	fresh := make(chan string, 1)
	c := storageConnectV3(t, url, "st-reader", true, fresh)
	storageWait(t, c.Subscribe("retained/#", 1, nil), "subscribe retained")
	select {
	case m := <-fresh:
		if m != "retained/x kept" {
			t.Fatalf("retained: %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained message lost across restart")
	}
}

func TestStorageValidate(t *testing.T) {
	for _, tc := range []struct {
		s  Storage
		ok bool
	}{
		{Storage{}, true},
		{Storage{Kind: StorageBolt, Path: "/x/y"}, true},
		{Storage{Kind: StorageBolt}, false},
		{Storage{Kind: "badger", Path: "/x"}, false},
	} {
		if err := tc.s.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.s, err)
		}
	}
}

func TestQueuedPublishesOrder(t *testing.T) {
	pk := func(created int64, id uint16) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Created: created, PacketID: id}
	}
	got := queuedPublishes([]packets.Packet{
		pk(11, 3), pk(10, 2), pk(10, 65535), pk(10, 1), pk(10, 65534),
		{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 9},
		pk(11, 2), pk(10, 4), // 4: published live since the resume
	}, map[uint16]bool{4: true})
	var ids []uint16
	for _, p := range got {
		ids = append(ids, p.PacketID)
	}
	if fmt.Sprint(ids) != "[65534 65535 1 2 2 3]" {
		t.Fatalf("order %v", ids)
	}
}

// spyConn reports every write the broker makes to a client.
type spyConn struct {
	net.Conn
	onWrite func([]byte)
}

func (c *spyConn) Write(p []byte) (int, error) {
	c.onWrite(p)
	return c.Conn.Write(p)
}

// TestAckAfterStore: with storage, a publisher's PUBACK leaves only after
// the message is stored for the offline subscriber. mochi alone writes the
// PUBACK first, so a crash in between lost an acknowledged message.
func TestAckAfterStore(t *testing.T) {
	st := Storage{Kind: StorageBolt, Path: filepath.Join(t.TempDir(), "broker.bolt")}
	b := newBroker(t, Options{Storage: st}, AnonymousPolicy{Allow: true})
	var (
		mu     sync.Mutex
		acks   int
		early  int
		spying = true
	)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			spy := &spyConn{Conn: conn, onWrite: func(p []byte) {
				if len(p) < 4 || p[0] != 0x40 { // PUBACK
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if !spying {
					return
				}
				acks++
				sub, ok := b.Server().Clients.Get("ack-sub")
				if !ok || sub.State.Inflight.Len() < acks {
					early++
				}
			}}
			go func() {
				defer conn.Close()
				_ = b.Serve(spy, ConnInfo{Door: Doors[0]})
			}()
		}
	}()
	url := "tcp://" + l.Addr().String()
	sub := storageConnectV3(t, url, "ack-sub", false, nil)
	storageWait(t, sub.Subscribe("ack/#", 1, nil), "subscribe")
	sub.Disconnect(100)
	pub := storageConnectV3(t, url, "ack-pub", true, nil)
	for i := 0; i < 50; i++ {
		storageWait(t, pub.Publish("ack/x", 1, false, fmt.Sprint(i)), "publish")
	}
	mu.Lock()
	defer mu.Unlock()
	spying = false
	if acks != 50 || early != 0 {
		t.Fatalf("%d PUBACKs, %d of them sent before the message was queued for the subscriber", acks, early)
	}
}
