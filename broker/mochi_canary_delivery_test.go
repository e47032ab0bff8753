package broker

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Canaries for the delivery workarounds (flow.go, backpressure.go,
// storage.go, writer.go, shared.go); see mochi_canary_test.go and MOCHI.md.
// Where a behaviour shows only in a narrow window, a test hook (never one of
// this package's) holds the window open.

// refuseHook lets every client in and refuses what refuse says. mochi allows
// what any one hook allows, so it is a canary's only auth hook.
type refuseHook struct {
	mqtt.HookBase
	refuse func(cl *mqtt.Client, topic string, write bool) bool
}

func (h *refuseHook) ID() string { return "canary-refuse" }

func (h *refuseHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *refuseHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *refuseHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return !h.refuse(cl, topic, write)
}

// Canary for flow.go (our own window): once mochi's Receive Maximum send
// quota has held messages back, it sends one per packet the client sends
// and deletes it from the in-flight store as it does, so the client's
// PUBACK for it returns no quota: the flow stalls.
func TestMochiCanaryReceiveMaximumStalls(t *testing.T) {
	srv, addr := bareMochi(t, nil)
	c := dialRaw(t, addr, 5, "canary-rm-stall", true, packets.Properties{ReceiveMaximum: 2})
	c.subscribe("canary/rm", 1)
	for i := range 10 {
		if err := srv.Publish("canary/rm", []byte(strconv.Itoa(i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	if all := c.drain(c.publishes(quiet), 2); len(all) == 10 {
		t.Fatal("mochi's send quota now lets all 10 messages through: review the window in flow.go (MOCHI.md row 8)")
	}
}

// Canary for writer.go and backpressure.go: when a client's channel of
// writes (MaximumClientWritesPending) is full, mochi drops the message, a
// QoS 1 one too, and deletes it from the client's in-flight store.
func TestMochiCanaryFullWriteChannelDropsQoS1(t *testing.T) {
	srv, addr := bareMochi(t, withCapabilities(func(c *mqtt.Capabilities) { c.MaximumClientWritesPending = 4 }))
	c := dialRaw(t, addr, 4, "canary-full", true, packets.Properties{})
	c.subscribe("canary/full", 1)
	// The client does not read: the socket fills, then mochi's channel.
	payload := bytes.Repeat([]byte("x"), 64<<10)
	published := 0
	for ; published < 2000 && atomic.LoadInt64(&srv.Info.MessagesDropped) == 0; published++ {
		if err := srv.Publish("canary/full", payload, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	if atomic.LoadInt64(&srv.Info.MessagesDropped) == 0 {
		t.Fatalf("mochi dropped none of %d QoS 1 messages to a client that does not read: review writer.go and awaitWriteSlot (MOCHI.md row 9)", published)
	}
	cl, ok := srv.Clients.Get("canary-full")
	if !ok {
		t.Fatal("client not registered")
	}
	if n := cl.State.Inflight.Len(); n >= published {
		t.Fatalf("mochi kept all %d QoS 1 messages in flight, the dropped one too: review MOCHI.md row 9", n)
	}
}

// Canary for storage.go (orderHook): mochi resends a resumed session's
// queue sorted by the second each message was created, in random order
// within the second.
func TestMochiCanaryResendOrder(t *testing.T) {
	srv, addr := bareMochi(t, nil)
	offlineQueue(t, srv, addr, "canary-order", "canary/order", 50)
	c := dialRaw(t, addr, 4, "canary-order", false, packets.Properties{})
	got := c.publishes(quiet)
	if len(got) != 50 {
		t.Fatalf("resent %d of 50", len(got))
	}
	for i, pk := range got {
		if string(pk.Payload) != strconv.Itoa(i) {
			return // out of order, as before
		}
	}
	t.Fatal("mochi resent 50 queued messages in order: review orderHook in storage.go (MOCHI.md row 10)")
}

// eventHook records, in order, the acknowledgements mochi writes and the
// QoS 1/2 messages it queues (stores) for subscribers.
type eventHook struct {
	mqtt.HookBase
	mu     sync.Mutex
	events []string
}

func (h *eventHook) ID() string { return "canary-events" }

func (h *eventHook) Provides(b byte) bool { return b == mqtt.OnPacketSent || b == mqtt.OnQosPublish }

func (h *eventHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Puback {
		h.add("PUBACK to " + cl.ID)
	}
}

func (h *eventHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type == packets.Publish {
		h.add("stored for " + cl.ID)
	}
}

func (h *eventHook) add(e string) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

func (h *eventHook) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// Canary for storage.go (orderHook's held acknowledgements): mochi writes
// the publisher's PUBACK before it stores the message for a subscriber.
func TestMochiCanaryAckBeforeStore(t *testing.T) {
	events := new(eventHook)
	_, addr := bareMochiWith(t, nil, new(auth.AllowHook), events)
	sub := dialRaw(t, addr, 4, "canary-store-sub", true, packets.Properties{})
	sub.subscribe("canary/store", 1)
	pub := dialRaw(t, addr, 4, "canary-store-pub", true, packets.Properties{})
	pub.send(publishPk(7, 1, "canary/store", "x"))
	if pk := pub.read(2 * time.Second); pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("got %v, want PUBACK", pk.FixedHeader.Type)
	}
	waitFor(t, func() bool { return len(events.all()) >= 2 })
	want := []string{"PUBACK to canary-store-pub", "stored for canary-store-sub"}
	if got := events.all(); fmt.Sprint(got[:2]) != fmt.Sprint(want) {
		t.Fatalf("mochi now stores before it acknowledges (%q): review orderHook's held acks in storage.go (MOCHI.md row 11)", got)
	}
}

// earlyPublishHook publishes to a resumed session from inside the encoding
// of its CONNACK, and holds the CONNACK until that publish is written.
type earlyPublishHook struct {
	mqtt.HookBase
	srv  atomic.Pointer[mqtt.Server]
	sent chan struct{}
	once sync.Once
}

func (h *earlyPublishHook) ID() string { return "canary-early-publish" }

func (h *earlyPublishHook) Provides(b byte) bool {
	return b == mqtt.OnPacketEncode || b == mqtt.OnPacketSent
}

func (h *earlyPublishHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	srv := h.srv.Load()
	if pk.FixedHeader.Type != packets.Connack || !pk.SessionPresent || srv == nil {
		return pk
	}
	if err := srv.Publish("canary/early", []byte("early"), false, 0); err == nil {
		select {
		case <-h.sent:
		case <-time.After(2 * time.Second):
		}
	}
	return pk
}

func (h *earlyPublishHook) OnPacketSent(_ *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		h.once.Do(func() { close(h.sent) })
	}
}

// Canary for writer.go (beforeConnack): mochi registers a resuming client,
// which makes it a subscriber again, before it writes the CONNACK, so what
// is routed to it in between is written first.
func TestMochiCanaryPublishBeforeConnack(t *testing.T) {
	hook := &earlyPublishHook{sent: make(chan struct{})}
	srv, addr := bareMochiWith(t, nil, new(auth.AllowHook), hook)
	c := dialRaw(t, addr, 4, "canary-early", false, packets.Properties{})
	c.subscribe("canary/early", 0)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitFor(t, func() bool { cl, ok := srv.Clients.Get("canary-early"); return ok && cl.Closed() })
	hook.srv.Store(srv)

	w := dialWire(t, addr)
	w.v = 4
	w.packet(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{Keepalive: 30, ClientIdentifier: "canary-early"},
	})
	if first := w.next(5 * time.Second); len(first) == 0 || first[0]>>4 != packets.Publish {
		t.Fatalf("mochi now writes the CONNACK first (% x): review beforeConnack in writer.go (MOCHI.md row 16)", first)
	}
}

// Canary for shared.go: mochi gives a shared subscription's message to
// one member of the group chosen before the ACL check, so a member whose
// ACL refuses the message loses it for the group.
func TestMochiCanarySharedToRefusedMember(t *testing.T) {
	refuse := &refuseHook{refuse: func(cl *mqtt.Client, topic string, write bool) bool {
		return !write && cl.ID == "canary-share-refused" && topic == "canary/share" // the filter may be subscribed
	}}
	srv, addr := bareMochiWith(t, nil, refuse)
	refused := dialRaw(t, addr, 4, "canary-share-refused", true, packets.Properties{})
	refused.subscribe("$share/g/canary/share", 0)
	allowed := dialRaw(t, addr, 4, "canary-share-allowed", true, packets.Properties{})
	allowed.subscribe("$share/g/canary/share", 0)
	for i := range 200 {
		if err := srv.Publish("canary/share", []byte(strconv.Itoa(i)), false, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := allowed.publishes(quiet); len(got) == 200 {
		t.Fatal("mochi gave all 200 messages to the member allowed to read them: review shared.go (MOCHI.md row 28)")
	}
	if got := refused.publishes(quiet); len(got) != 0 {
		t.Fatalf("the refused member got %d messages", len(got))
	}
}

// encodeCountHook counts the PUBLISH packets mochi encodes and writes.
type encodeCountHook struct {
	mqtt.HookBase
	encoded, sent atomic.Int64
}

func (h *encodeCountHook) ID() string { return "canary-encode-count" }

func (h *encodeCountHook) Provides(b byte) bool {
	return b == mqtt.OnPacketEncode || b == mqtt.OnPacketSent
}

func (h *encodeCountHook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish {
		h.encoded.Add(1)
	}
	return pk
}

func (h *encodeCountHook) OnPacketSent(_ *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		h.sent.Add(1)
	}
}

// Canary for flow.go and writer.go reading packets from the bytes written
// (nextPacket) rather than from OnPacketEncode: mochi calls OnPacketEncode
// for a packet it then drops unwritten (one over the client's Maximum
// Packet Size).
func TestMochiCanaryEncodedNotWritten(t *testing.T) {
	count := new(encodeCountHook)
	srv, addr := bareMochiWith(t, nil, new(auth.AllowHook), count)
	c := dialRaw(t, addr, 5, "canary-encoded", true, packets.Properties{MaximumPacketSize: 128})
	c.subscribe("canary/encoded", 0)
	if err := srv.Publish("canary/encoded", bytes.Repeat([]byte("x"), 1024), false, 0); err != nil {
		t.Fatal(err)
	}
	if got := c.publishes(quiet); len(got) != 0 {
		t.Fatalf("a publish over the client's Maximum Packet Size was written (%d bytes)", len(got[0].Payload))
	}
	if count.encoded.Load() != 1 || count.sent.Load() != 0 {
		t.Fatalf("mochi encoded %d and wrote %d publishes: when every encoded packet is written, flow accounting could move to OnPacketEncode (MOCHI.md row 33)",
			count.encoded.Load(), count.sent.Load())
	}
}

// Canary for encode.go (one hook for OnPacketEncode): mochi passes the whole
// packets.Packet by value into and out of every hook's OnPacketEncode.
func TestMochiCanaryEncodeByValue(t *testing.T) {
	m, ok := reflect.TypeFor[mqtt.Hook]().MethodByName("OnPacketEncode")
	packet := reflect.TypeFor[packets.Packet]()
	if !ok || m.Type.NumIn() != 2 || m.Type.In(1) != packet || m.Type.NumOut() != 1 || m.Type.Out(0) != packet {
		t.Fatalf("mochi's OnPacketEncode is now %v: review encodeHook in encode.go (MOCHI.md row 34)", m.Type)
	}
	if size := packet.Size(); size < 512 {
		t.Fatalf("packets.Packet is now %d bytes: a hook per concern may cost little enough again (MOCHI.md row 34)", size)
	}
	m, ok = reflect.TypeFor[mqtt.Hook]().MethodByName("OnPacketRead")
	if !ok || m.Type.NumIn() != 2 || m.Type.In(1) != packet || m.Type.NumOut() != 2 || m.Type.Out(0) != packet {
		t.Fatalf("mochi's OnPacketRead is now %v: review readHook in read.go (MOCHI.md row 34)", m.Type)
	}
}

// placeholderHook puts encodepublish.go's placeholder in place of every
// PUBLISH of 1 KiB or more.
type placeholderHook struct{ mqtt.HookBase }

func (h *placeholderHook) ID() string { return "canary-placeholder" }

func (h *placeholderHook) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

func (h *placeholderHook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Publish || len(pk.Payload) < 1024 {
		return pk
	}
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 3}, PacketID: 9,
		ProtocolVersion: pk.ProtocolVersion, Mods: pk.Mods}
}

// Canary for encodepublish.go: mochi encodes every packet it writes into a
// new buffer that grows with it, so each 4 KiB delivery allocates at least
// its size again; and it writes whatever OnPacketEncode returns, a PUBLISH
// with both QoS bits set (the placeholder) included, counting it as a
// message sent.
func TestMochiCanaryEncodesIntoNewBuffers(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	conn, peer := net.Pipe()
	defer conn.Close()
	defer peer.Close()
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	cl := srv.NewClient(conn, "t", "canary-alloc", false)
	cl.Properties.ProtocolVersion = 4
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "canary/alloc", Payload: make([]byte, 4096)}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 100
	for range n {
		if err := cl.WritePacket(pk); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per < 4096 {
		t.Fatalf("mochi allocated %d bytes for each 4 KiB PUBLISH it wrote: encodepublish.go may no longer save anything (MOCHI.md row 37)", per)
	}

	srv2, addr := bareMochiWith(t, nil, new(auth.AllowHook), new(placeholderHook))
	c := dialRaw(t, addr, 4, "canary-placeholder", true, packets.Properties{})
	c.subscribe("canary/placeholder", 0)
	sent := atomic.LoadInt64(&srv2.Info.MessagesSent)
	if err := srv2.Publish("canary/placeholder", make([]byte, 2048), false, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c.r, got); err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x36, 4, 0, 0, 0, 9}; !bytes.Equal(got, want) {
		t.Fatalf("mochi wrote % x for the placeholder, want % x: review encodepublish.go (MOCHI.md row 37)", got, want)
	}
	waitFor(t, func() bool { return atomic.LoadInt64(&srv2.Info.MessagesSent) == sent+1 })
}
