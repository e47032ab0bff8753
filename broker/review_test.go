package broker

// Regression tests for defects found in review: a will the ACL forbids, a
// restored offline session losing messages, and a stalled client holding
// its client id forever.

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

// TestWillMustBePublishable: mochi publishes wills with no ACL or topic
// check, so a client that may not publish could plant (retained) messages
// anywhere, $SYS included, by dropping its connection. Such a CONNECT is
// refused with "not authorized", as mosquitto does.
func TestWillMustBePublishable(t *testing.T) {
	acl, err := auth.ParseACLFile(strings.NewReader("topic read #\ntopic write public/#\n"), "acl")
	if err != nil {
		t.Fatal(err)
	}
	b := newBroker(t, Options{}, &AuthPolicy{AllowAnonymous: true, ACL: acl})
	url := serveStorageTCP(t, b)
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"public/gone", true},
		{"secret/cmd", false},
		{"$SYS/broker/version", false},
		{"wild/+/card", false},
	} {
		opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("will").SetProtocolVersion(4).
			SetAutoReconnect(false).SetConnectRetry(false).SetWill(tc.topic, "x", 0, true)
		c := pahov3.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("will %q: no answer", tc.topic)
		}
		if ok := tok.Error() == nil; ok != tc.ok {
			t.Fatalf("will %q: connect error %v, want ok=%v", tc.topic, tok.Error(), tc.ok)
		}
		if !tc.ok && tok.(*pahov3.ConnectToken).ReturnCode() != 5 {
			t.Fatalf("will %q: return code %d, want 5 (not authorized)", tc.topic, tok.(*pahov3.ConnectToken).ReturnCode())
		}
		c.Disconnect(0)
	}
}

// TestOfflineRestoredSessionQueues: a persistent session restored from
// storage has no connection until its client comes back; messages for it
// must be queued meanwhile, not refused by the ACL check.
func TestOfflineRestoredSessionQueues(t *testing.T) {
	st := Storage{Kind: StorageBolt, Path: filepath.Join(t.TempDir(), "b.bolt")}
	b1, err := New(Options{Storage: st}, AnonymousPolicy{Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	url := serveStorageTCP(t, b1)
	sub := storageConnectV3(t, url, "restored-sub", false, nil)
	storageWait(t, sub.Subscribe("restored/#", 1, nil), "subscribe")
	sub.Disconnect(100)
	if err := b1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	b2 := newStorageBroker(t, st)
	url = serveStorageTCP(t, b2)
	pub := storageConnectV3(t, url, "restored-pub", true, nil)
	storageWait(t, pub.Publish("restored/a", 1, false, "published after the restart"), "publish")
	msgs := make(chan string, 10)
	storageConnectV3(t, url, "restored-sub", false, msgs)
	select {
	case m := <-msgs:
		if m != "restored/a published after the restart" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("message for an offline session restored from storage was lost")
	}
}

// TestStalledClientDoesNotHoldItsID: a client with keepalive 0 that stops
// reading while messages pile up is disconnected once a write to it has
// blocked for the write timeout, so a new connection can take its client
// id over instead of waiting forever.
func TestStalledClientDoesNotHoldItsID(t *testing.T) {
	b := newBroker(t, Options{WriteTimeout: time.Second}, AnonymousPolicy{Allow: true})
	url := serveStorageTCP(t, b)
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { setReceiveBuffer(fd, 4096) })
	}}
	stalled, err := d.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	// MQTT 5 CONNECT, client id X, keepalive 0; SUBSCRIBE t at QoS 0.
	_, _ = stalled.Write([]byte{0x10, 0x0E, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 0, 0, 1, 'X'})
	_, _ = stalled.Write([]byte{0x82, 0x07, 0, 1, 0, 0, 1, 't', 0})
	_ = stalled.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = stalled.Read(make([]byte, 64)) // CONNACK and SUBACK, then never read again

	pub := storageConnectV3(t, url, "pub", true, nil)
	payload := bytes.Repeat([]byte("x"), 64<<10)
	for i := 0; i < 300; i++ {
		pub.Publish("t", 0, false, payload).WaitTimeout(time.Second)
	}
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("X").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(8 * time.Second)
	c := pahov3.NewClient(opts)
	start := time.Now()
	if tok := c.Connect(); !tok.WaitTimeout(8*time.Second) || tok.Error() != nil {
		t.Fatalf("could not take over the stalled session's id: %v", tok.Error())
	}
	t.Logf("took over after %v", time.Since(start))
	c.Disconnect(0)
}

// TestRestoredSessionKeepsItsDoorACL: a persistent session that came in
// through a door with its own ACL is, once restored from storage after a
// restart, still checked against that door's ACL (not the broker-wide one,
// here none: everything allowed) until its client reconnects.
func TestRestoredSessionKeepsItsDoorACL(t *testing.T) {
	st := Storage{Kind: StorageBolt, Path: filepath.Join(t.TempDir(), "b.bolt")}
	policy := func(rules string) Policy {
		acl, err := auth.ParseACLFile(strings.NewReader(rules), "door acl")
		if err != nil {
			t.Fatal(err)
		}
		return &AuthPolicy{AllowAnonymous: true, Doors: map[string]DoorAuth{"door": {ACL: acl}}}
	}
	b1, err := New(Options{Storage: st}, policy("topic readwrite a/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	url := "tcp://" + serveDoor(t, b1, ConnInfo{Door: DoorTCP, AuthKey: "door"})
	sub := storageConnectV3(t, url, "door-sub", false, nil)
	storageWait(t, sub.Subscribe("a/#", 1, nil), "subscribe")
	sub.Disconnect(100)
	if err := b1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// After the restart the door may read a/public only.
	b2 := newBroker(t, Options{Storage: st}, policy("topic read a/public\ntopic write a/#\n"))
	url = "tcp://" + serveDoor(t, b2, ConnInfo{Door: DoorTCP, AuthKey: "door"})
	pub := storageConnectV3(t, url, "door-pub", true, nil)
	storageWait(t, pub.Publish("a/secret", 1, false, "s"), "publish")
	storageWait(t, pub.Publish("a/public", 1, false, "p"), "publish")
	msgs := make(chan string, 10)
	storageConnectV3(t, url, "door-sub", false, msgs)
	select {
	case m := <-msgs:
		if m != "a/public p" {
			t.Fatalf("the restored session got %q, which its door's ACL forbids", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the allowed message was not queued for the restored session")
	}
	select {
	case m := <-msgs:
		t.Fatalf("and then %q", m)
	case <-time.After(300 * time.Millisecond):
	}
}

// slowConnack delays the CONNACK to one client, widening the moment in
// which mochi routes messages to a resumed session that has not been sent
// its CONNACK yet.
type slowConnack struct {
	mqtt.HookBase
	client string
}

func (h *slowConnack) ID() string           { return "test-slow-connack" }
func (h *slowConnack) Provides(b byte) bool { return b == mqtt.OnPacketEncode }
func (h *slowConnack) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.ID == h.client && pk.FixedHeader.Type == packets.Connack {
		time.Sleep(300 * time.Millisecond)
	}
	return pk
}

// TestNoPublishBeforeConnack: messages published while a persistent session
// is being resumed reach the client after its CONNACK, never before it
// (dialRaw fails on anything but a CONNACK first).
func TestNoPublishBeforeConnack(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	sub := dialRaw(t, addr, 4, "early", false, packets.Properties{})
	sub.subscribe("early/t", 0)
	sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitFor(t, func() bool {
		cl, ok := b.Server().Clients.Get("early")
		return ok && cl.Closed()
	})
	if err := b.Server().AddHook(&slowConnack{client: "early"}, nil); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			_ = b.Server().Publish("early/t", []byte(strconv.Itoa(i)), false, 0)
		}
	}()
	sub = dialRaw(t, addr, 4, "early", false, packets.Properties{})
	close(stop)
	<-done
	if got := sub.publishes(quiet); len(got) == 0 {
		t.Fatal("no message after the CONNACK: the test did not publish during the resume")
	}
}
