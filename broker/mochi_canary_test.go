package broker

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Canary tests: each shows a mochi v2.7.9 behaviour that the broker works
// around (MOCHI.md lists them), on a bare mochi server with none of this
// package's hooks. When a mochi upgrade changes the behaviour, its canary
// fails: the workaround it names can then be reviewed and perhaps deleted.

// bareMochi runs a mochi server with default options, an allow-all auth
// hook and one loopback door, and returns the door's address.
func bareMochi(t *testing.T, configure func(*mqtt.Options)) (*mqtt.Server, string) {
	t.Helper()
	opts := &mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)}
	if configure != nil {
		configure(opts)
	}
	srv := mqtt.New(opts)
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(&doorListener{id: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = srv.EstablishConnection("t", conn); conn.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); _ = srv.Close() })
	return srv, ln.Addr().String()
}

// offlineQueue subscribes a persistent MQTT 3.1.1 session to topic, leaves,
// and queues n QoS 1 messages for it.
func offlineQueue(t *testing.T, srv *mqtt.Server, addr, id, topic string, n int) {
	t.Helper()
	c := dialRaw(t, addr, 4, id, false, packets.Properties{})
	c.subscribe(topic, 1)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitFor(t, func() bool { cl, ok := srv.Clients.Get(id); return ok && cl.Closed() })
	for i := range n {
		if err := srv.Publish(topic, []byte(fmt.Sprint(i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
}

// Canary for packetids.go: mochi refuses a SUBSCRIBE whose packet
// identifier equals that of a message it has in flight to the client.
func TestMochiCanarySharedPacketIDs(t *testing.T) {
	srv, addr := bareMochi(t, nil)
	offlineQueue(t, srv, addr, "canary-ids", "canary/ids", 3)
	c := dialRaw(t, addr, 4, "canary-ids", false, packets.Properties{})
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "canary/ids", Qos: 1}},
	})
	for {
		pk := c.read(2 * time.Second)
		if pk.FixedHeader.Type == 0 {
			t.Fatal("no SUBACK")
		}
		if pk.FixedHeader.Type == packets.Suback {
			if len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] < 0x80 {
				t.Fatalf("mochi granted the SUBSCRIBE (%v): review packetids.go", pk.ReasonCodes)
			}
			return
		}
	}
}

// Canary for storage.go (orderHook.OnPacketEncode): mochi marks every
// queued message DUP when it resends a resumed session's queue, also those
// it never sent.
func TestMochiCanaryDupOnFirstDelivery(t *testing.T) {
	srv, addr := bareMochi(t, nil)
	offlineQueue(t, srv, addr, "canary-dup", "canary/dup", 3)
	c := dialRaw(t, addr, 4, "canary-dup", false, packets.Properties{})
	got := c.publishes(quiet)
	if len(got) == 0 {
		t.Fatal("nothing resent")
	}
	for _, pk := range got {
		if !pk.FixedHeader.Dup {
			t.Fatal("mochi sent a queued message with DUP 0: review the DUP rewrite in storage.go")
		}
	}
}

// Canary for session.go: mochi hands a persistent session, queue and all,
// to any connection with its client id, whoever it is.
func TestMochiCanaryTakeoverInheritsQueue(t *testing.T) {
	srv, addr := bareMochi(t, nil)
	offlineQueue(t, srv, addr, "canary-owner", "canary/owner", 3)
	other, ack := dialRawConnect(t, addr, 4, login("canary-owner", "someone-else", "x", false), packets.Properties{})
	if !ack.SessionPresent || len(other.publishes(quiet)) != 3 {
		t.Fatal("mochi no longer hands a session to another user: review session.go")
	}
}

// Canary for flow.go (OnConnect): mochi applies its MQTT 5 Receive Maximum
// to MQTT 3 clients and closes the connection of one with more unreleased
// QoS 2 publishes.
func TestMochiCanaryMQTT3ReceiveMaximum(t *testing.T) {
	_, addr := bareMochi(t, func(o *mqtt.Options) {
		o.Capabilities = mqtt.NewDefaultServerCapabilities()
		o.Capabilities.ReceiveMaximum = 5
	})
	c := dialRaw(t, addr, 4, "canary-rm", true, packets.Properties{})
	for i := 1; i <= 6; i++ {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: uint16(i), TopicName: "canary/rm", Payload: []byte("x")})
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n := 0
	for {
		if _, err := c.r.ReadByte(); err != nil {
			if strings.Contains(err.Error(), "timeout") {
				t.Fatal("mochi kept the MQTT 3 connection open: review the receive quota in flow.go")
			}
			return // closed, as before
		}
		n++
	}
}

// Canary for backpressure.go: mochi's per-client write buffer is the
// channel Client.State.outbound, read through reflection.
func TestMochiCanaryOutboundChannel(t *testing.T) {
	if outboundField == nil {
		t.Fatal("mqtt.ClientState has no outbound channel: review mochiWritesPending in backpressure.go")
	}
	srv, addr := bareMochi(t, nil)
	_ = dialRaw(t, addr, 4, "canary-out", true, packets.Properties{})
	cl, ok := srv.Clients.Get("canary-out")
	if !ok {
		t.Fatal("client not registered")
	}
	if n := mochiWritesPending(cl); n != 0 {
		t.Fatalf("idle client has %d pending writes", n)
	}
}

// Canary for retained.go: mochi writes a new subscription's retained
// messages into the client's write buffer all at once and drops what does
// not fit.
func TestMochiCanaryRetainedDropped(t *testing.T) {
	srv, addr := bareMochi(t, func(o *mqtt.Options) {
		o.Capabilities = mqtt.NewDefaultServerCapabilities()
		o.Capabilities.MaximumClientWritesPending = 16
	})
	payload := strings.Repeat("x", 4096)
	for i := range 1000 {
		if err := srv.Publish(fmt.Sprintf("canary/r/%04d", i), []byte(payload), true, 0); err != nil {
			t.Fatal(err)
		}
	}
	c := dialRaw(t, addr, 4, "canary-retained", true, packets.Properties{})
	// Subscribe without reading: the socket fills, mochi's buffer too.
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "canary/r/#", Qos: 0}},
	})
	time.Sleep(500 * time.Millisecond)
	got := 0
	for pk := c.read(2 * time.Second); pk.FixedHeader.Type != 0; pk = c.read(quiet) {
		if pk.FixedHeader.Type == packets.Publish {
			got++
		}
	}
	if got == 1000 {
		t.Fatal("mochi delivered every retained message to a client that was not reading: review retained.go")
	}
}
