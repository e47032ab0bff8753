package broker

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// encodedSubscriber connects a subscriber to "enc/t" and returns it with its
// mochi client and connection.
func encodedSubscriber(t *testing.T, version byte) (*Broker, *rawClient, *mqtt.Client, *clientConn) {
	t.Helper()
	b, addr := newDoorBroker(t, DoorLimits{})
	sub := dialRaw(t, addr, version, "enc-sub", true, packets.Properties{})
	sub.subscribe("enc/t", 0)
	cl, ok := b.srv.Clients.Get("enc-sub")
	if !ok {
		t.Fatal("no client enc-sub")
	}
	return b, sub, cl, cl.Net.Conn.(*clientConn)
}

// encodedBytes is pk as mochi encodes it.
func encodedBytes(t testing.TB, pk packets.Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPublishWrittenInPlaceOfPlaceholder: mochi encodes a placeholder for a
// 4 KiB PUBLISH (encodepublish.go), and the write path puts the packet in
// its place, also among other packets that mochi's write buffer gathered.
func TestPublishWrittenInPlaceOfPlaceholder(t *testing.T) {
	for _, version := range []byte{4, 5} {
		b, sub, cl, cc := encodedSubscriber(t, version)
		big := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "enc/t",
			Payload: bytes.Repeat([]byte("0123456789abcdef"), 256), ProtocolVersion: version}
		big.Properties.ContentType = "text/plain" // MQTT 5 only
		ph := mochiHooks(b.srv).OnPacketEncode(cl, big)
		if ph.FixedHeader.Type != packets.Publish || ph.FixedHeader.Qos != 3 {
			t.Fatalf("MQTT %d: mochi encodes a 4 KiB PUBLISH itself (%v QoS %d), not a placeholder",
				version, packets.PacketNames[ph.FixedHeader.Type], ph.FixedHeader.Qos)
		}
		small := func(s string) []byte {
			return encodedBytes(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish},
				TopicName: "enc/t", Payload: []byte(s), ProtocolVersion: version})
		}
		// As mochi writes a placeholder gathered in its write buffer.
		p := append(small("before"), encodedBytes(t, ph)...)
		p = append(p, small("after")...)
		if _, err := cc.Write(p); err != nil {
			t.Fatal(err)
		}
		for _, want := range []packets.Packet{{Payload: []byte("before")}, big, {Payload: []byte("after")}} {
			got := sub.read(5 * time.Second)
			if got.FixedHeader.Type != packets.Publish || !bytes.Equal(got.Payload, want.Payload) {
				t.Fatalf("MQTT %d: got %v with %.12q (%d bytes), want %.12q (%d bytes)", version,
					packets.PacketNames[got.FixedHeader.Type], got.Payload, len(got.Payload), want.Payload, len(want.Payload))
			}
			if want.Properties.ContentType != "" && version == 5 && got.Properties.ContentType != want.Properties.ContentType {
				t.Fatalf("content type %q, want %q", got.Properties.ContentType, want.Properties.ContentType)
			}
		}
		cc.wmu.Lock()
		waiting := len(cc.enc.waiting)
		cc.wmu.Unlock()
		if waiting != 0 {
			t.Fatalf("%d encoded packets still waiting", waiting)
		}
	}
}

// TestPublishEncodedHereCounted: a PUBLISH written in place of a
// placeholder counts as mochi counts those it writes itself: in $SYS
// (messages and bytes sent) and in the door's metrics.
func TestPublishEncodedHereCounted(t *testing.T) {
	b, sub, cl, cc := encodedSubscriber(t, 5)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "enc/t",
		Payload: bytes.Repeat([]byte{7}, 3000), ProtocolVersion: 5}
	want := len(encodedBytes(t, pk))
	info := b.srv.Info
	// mochi counts after writing: the CONNACK and SUBACK first.
	waitFor(t, func() bool { return atomic.LoadInt64(&info.PacketsSent) == 2 })
	bytesSent, msgsSent := atomic.LoadInt64(&info.BytesSent), atomic.LoadInt64(&info.MessagesSent)
	out, payloadOut := cc.m.door.msgsOut[0].Load(), cc.m.door.payloadOut[0].Load()
	if err := cl.WritePacket(pk); err != nil {
		t.Fatal(err)
	}
	if got := sub.read(5 * time.Second); len(got.Payload) != len(pk.Payload) {
		t.Fatalf("got %d bytes", len(got.Payload))
	}
	if got := atomic.LoadInt64(&info.BytesSent) - bytesSent; got != int64(want) {
		t.Errorf("bytes sent: %d, want %d", got, want)
	}
	if got := atomic.LoadInt64(&info.MessagesSent) - msgsSent; got != 1 {
		t.Errorf("messages sent: %d, want 1", got)
	}
	if got := cc.m.door.msgsOut[0].Load() - out; got != 1 {
		t.Errorf("door messages out: %d, want 1", got)
	}
	if got := cc.m.door.payloadOut[0].Load() - payloadOut; got != uint64(len(pk.Payload)) {
		t.Errorf("door payload out: %d, want %d", got, len(pk.Payload))
	}
}

// TestPlaceholderWithoutPacketDropped: a placeholder whose packet is gone
// (the connection failed in between) never reaches the client; it would be
// a malformed PUBLISH there.
func TestPlaceholderWithoutPacketDropped(t *testing.T) {
	_, sub, _, cc := encodedSubscriber(t, 4)
	ph := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 3}, PacketID: 77, ProtocolVersion: 4}
	p := append(encodedBytes(t, ph), encodedBytes(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName: "enc/t", Payload: []byte("next"), ProtocolVersion: 4})...)
	if _, err := cc.Write(p); err != nil {
		t.Fatal(err)
	}
	// rawClient.read fails on a PUBLISH with both QoS bits set.
	if got := sub.read(5 * time.Second); string(got.Payload) != "next" {
		t.Fatalf("got %v %q, want the publish after the placeholder", packets.PacketNames[got.FixedHeader.Type], got.Payload)
	}
}

// sentHook reads the packets mochi writes.
type sentHook struct{ mqtt.HookBase }

func (h *sentHook) ID() string { return "test-sent" }

func (h *sentHook) Provides(b byte) bool { return b == mqtt.OnPacketSent }

// TestPlaceholdersOnlyForOwnHooks: with a hook of Options.Hooks that reads
// or changes the packets written, mochi encodes every PUBLISH itself, so
// that the hook sees it rather than a placeholder.
func TestPlaceholdersOnlyForOwnHooks(t *testing.T) {
	for _, hooks := range [][]mqtt.Hook{nil, {new(sentHook)}, {new(placeholderHook)}} {
		b := newBroker(t, Options{Hooks: hooks}, AnonymousPolicy{Allow: true})
		found := false
		for _, h := range mochiHooks(b.srv).GetAll() {
			if e, ok := h.(*encodeHook); ok {
				found = true
				if e.publish.off != (len(hooks) > 0) {
					t.Errorf("with hooks %v: own encoding off is %v", hooks, e.publish.off)
				}
			}
		}
		if !found {
			t.Fatal("no encodeHook")
		}
	}
}

// TestEncodedWaitingBounded: packets encoded for placeholders that mochi
// has not written yet (gathered in its write buffer) hold at most
// maxEncodedWaiting bytes; beyond that mochi encodes the next one itself.
func TestEncodedWaitingBounded(t *testing.T) {
	b, _, cl, cc := encodedSubscriber(t, 4)
	hooks := mochiHooks(b.srv)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "enc/t",
		Payload: make([]byte, 16<<10), ProtocolVersion: 4}
	placeholders := 0
	for range 2 * maxEncodedWaiting / len(pk.Payload) {
		if hooks.OnPacketEncode(cl, pk).FixedHeader.Qos == 3 {
			placeholders++
		}
	}
	if want := maxEncodedWaiting / len(encodedBytes(t, pk)); placeholders != want {
		t.Fatalf("%d packets of 16 KiB encoded for placeholders not yet written, want %d", placeholders, want)
	}
	cc.wmu.Lock()
	held := cc.enc.bytes
	cc.wmu.Unlock()
	if held > maxEncodedWaiting {
		t.Fatalf("%d bytes held", held)
	}
	// One packet larger than the bound is still encoded here.
	cc.wmu.Lock()
	cc.enc.reset()
	cc.wmu.Unlock()
	pk.Payload = make([]byte, maxEncodedWaiting-100)
	if hooks.OnPacketEncode(cl, pk).FixedHeader.Qos != 3 {
		t.Fatal("a single large packet was left to mochi")
	}
}

// TestOfflineLargeMessagesAllDelivered: a device that was offline gets
// every queued QoS 1 message of 4 KiB on its return, intact and in order,
// through a window of 5: mochi resends them, publishEncoder encodes them,
// and flow control holds most back in their pooled buffers.
func TestOfflineLargeMessagesAllDelivered(t *testing.T) {
	for _, version := range []byte{4, 5} {
		props := packets.Properties{}
		if version == 5 {
			props = sessionHour
		}
		b, addr := newDoorBroker(t, DoorLimits{MaxInflightMessages: 5, MaxQueuedMessages: 100})
		sub := dialRaw(t, addr, version, "offline-large", false, props)
		sub.subscribe("large/t", 1)
		sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		waitFor(t, func() bool {
			cl, ok := b.Server().Clients.Get("offline-large")
			return ok && cl.Closed()
		})
		payload := func(i int) []byte { return bytes.Repeat([]byte{byte('A' + i%26), byte(i)}, 2048) }
		const n = 60
		for i := range n {
			if err := b.Server().Publish("large/t", payload(i), false, 1); err != nil {
				t.Fatal(err)
			}
		}
		sub = dialRaw(t, addr, version, "offline-large", false, props)
		all := sub.drain(sub.publishes(quiet), 5)
		if len(all) != n {
			t.Fatalf("MQTT %d: %d messages after reconnecting, want %d", version, len(all), n)
		}
		for i, pk := range all {
			if !bytes.Equal(pk.Payload, payload(i)) {
				t.Fatalf("MQTT %d: message %d: %d bytes starting %q, want %q", version, i, len(pk.Payload), pk.Payload[:2], payload(i)[:2])
			}
		}
	}
}
