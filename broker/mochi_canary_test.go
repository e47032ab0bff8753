package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
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
	return bareMochiWith(t, configure, new(auth.AllowHook))
}

// bareMochiWith is bareMochi with the given hooks in place of the allow-all
// one: a canary's own test hook, never one of this package's.
func bareMochiWith(t *testing.T, configure func(*mqtt.Options), hooks ...mqtt.Hook) (*mqtt.Server, string) {
	t.Helper()
	opts := &mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)}
	if configure != nil {
		configure(opts)
	}
	srv := mqtt.New(opts)
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// As Broker.Shutdown does: the connections end before mochi's Close,
	// which waits for them (MOCHI.md rows 14 and 35).
	var (
		mu      sync.Mutex
		conns   []net.Conn
		closed  bool
		serving sync.WaitGroup
	)
	serving.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			if closed {
				conn.Close()
			}
			mu.Unlock()
			serving.Go(func() { _ = srv.EstablishConnection("t", conn); conn.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		serving.Wait()
		_ = srv.Close()
	})
	return srv, ln.Addr().String()
}

// withCapabilities configures bareMochi with mochi's default capabilities,
// changed by set.
func withCapabilities(set func(*mqtt.Capabilities)) func(*mqtt.Options) {
	return func(o *mqtt.Options) {
		o.Capabilities = mqtt.NewDefaultServerCapabilities()
		set(o.Capabilities)
	}
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

// Canary for storage.go (orderHook.encode): mochi marks every
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
	_, addr := bareMochi(t, withCapabilities(func(c *mqtt.Capabilities) { c.ReceiveMaximum = 5 }))
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
	srv, addr := bareMochi(t, withCapabilities(func(c *mqtt.Capabilities) { c.MaximumClientWritesPending = 16 }))
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

// TestCanaryMochiAllocatesAnnouncedLength: mochi's ReadPacket allocates
// the whole remaining length a fixed header announces before any of it
// has arrived. packetLimitConn (limits.go) works around it by handing the
// CONNECT to mochi only once all its bytes are here. When this test fails,
// mochi reads incrementally and the CONNECT buffering may be dropped (see
// MOCHI.md).
func TestCanaryMochiAllocatesAnnouncedLength(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{})
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	cl := srv.NewClient(server, "t", "canary", false)
	const announced = 8 << 20
	go func() {
		_, _ = client.Write(append([]byte{0x10}, 0x80, 0x80, 0x80, 0x04)) // 8 MiB
		_, _ = client.Write([]byte{0, 4})                                 // 2 of those bytes
	}()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var fh packets.FixedHeader
		if err := cl.ReadFixedHeader(&fh); err != nil {
			return
		}
		_, _ = cl.ReadPacket(&fh) // blocks for the rest, until the pipe closes
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.ReadMemStats(&after)
		if after.TotalAlloc-before.TotalAlloc >= announced || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	client.Close()
	<-done
	if grew := after.TotalAlloc - before.TotalAlloc; grew < announced {
		t.Fatalf("mochi allocated %d bytes for a packet announcing %d of which 2 arrived: it no longer allocates up front; packetLimitConn's CONNECT buffering may be unnecessary", grew, announced)
	}
}

// TestConnectBufferedUntilComplete: packetLimitConn hands on no byte of the
// first packet (CONNECT) until all of it has arrived, refuses a first
// packet over the CONNECT limit from its fixed header, and passes later
// packets through as they come.
func TestConnectBufferedUntilComplete(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	c := &packetLimitConn{Conn: server, limit: 1 << 20, connectLimit: 64}
	got := make(chan []byte, 4)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				got <- append([]byte(nil), buf[:n]...)
			}
			if err != nil {
				close(got)
				return
			}
		}
	}()
	connect := append([]byte{0x10, 10}, make([]byte, 10)...)
	_, _ = client.Write(connect[:5])
	select {
	case b := <-got:
		t.Fatalf("read %d bytes of an incomplete CONNECT", len(b))
	case <-time.After(100 * time.Millisecond):
	}
	_, _ = client.Write(connect[5:])
	if b := <-got; len(b) != len(connect) {
		t.Fatalf("CONNECT handed on in %d bytes, want %d", len(b), len(connect))
	}
	// After CONNECT, a packet bigger than the CONNECT limit passes through.
	_, _ = client.Write([]byte{0x30, 100})
	if b := <-got; len(b) != 2 {
		t.Fatalf("later packet: %d bytes", len(b))
	}
	client.Close()

	// A first packet that is not a CONNECT is handed on at once, for
	// mochi to refuse.
	server3, client3 := net.Pipe()
	defer client3.Close()
	c3 := &packetLimitConn{Conn: server3, limit: 1 << 20, connectLimit: 64}
	go func() { _, _ = client3.Write([]byte{0x30, 10, 0}) }() // a PUBLISH announcing 10 bytes, 1 sent
	if n, err := c3.Read(make([]byte, 512)); n == 0 || err != nil {
		t.Fatalf("non-CONNECT first packet: read %d, %v; want it handed on", n, err)
	}

	// A first packet over the CONNECT limit fails from its fixed header.
	server2, client2 := net.Pipe()
	defer client2.Close()
	c2 := &packetLimitConn{Conn: server2, limit: 1 << 20, connectLimit: 64}
	go func() { _, _ = client2.Write([]byte{0x10, 0x80, 0x01}) }() // 128 bytes
	if _, err := c2.Read(make([]byte, 512)); err != packets.ErrPacketTooLarge {
		t.Fatalf("CONNECT over the limit: %v, want ErrPacketTooLarge", err)
	}
}

// recordingConn keeps every buffer written to it, and a copy of it.
type recordingConn struct {
	net.Conn
	mu      sync.Mutex
	written [][2][]byte // the buffer mochi passed, and its bytes then
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.written = append(c.written, [2][]byte{p, bytes.Clone(p)})
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// Canary for outqueue.go: mochi encodes every packet into a buffer of its
// own and never touches a buffer once it has been written, also when it
// gathers several packets in its write buffer while more wait; so the write
// path may keep a buffer until it is written instead of copying it.
func TestMochiCanaryWrittenBuffersUntouched(t *testing.T) {
	srv, _ := bareMochi(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rec := make(chan *recordingConn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		rc := &recordingConn{Conn: conn}
		rec <- rc
		_ = srv.EstablishConnection("t", rc)
		conn.Close()
	}()
	sub := dialRaw(t, ln.Addr().String(), 5, "canary-buffers", true, packets.Properties{})
	sub.subscribe("canary/b", 1)
	const n = 300
	for i := range n {
		payload := bytes.Repeat([]byte{byte(i)}, []int{5, 900, 3000}[i%3])
		if err := srv.Publish("canary/b", payload, false, byte(i%2)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		pk := sub.read(5 * time.Second)
		if pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("message %d: got %v", i, pk.FixedHeader.Type)
		}
		if pk.FixedHeader.Qos > 0 {
			sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
	}
	rc := <-rec
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.written) == 0 {
		t.Fatal("nothing written")
	}
	for i, w := range rc.written {
		if !bytes.Equal(w[0], w[1]) {
			t.Fatalf("write %d of %d (%d bytes) was changed after mochi wrote it: review outQueue.add (MOCHI.md row 31)", i, len(rc.written), len(w[1]))
		}
	}
}

// Canary for handover.go: when a connection resumes a session, mochi copies
// the old client's queue into a new store for the new client and clears the
// old one, so a message queued in the old client after the copy (by a
// publisher that looked the client id up before the new client was
// registered) is never delivered.
func TestMochiCanaryResumeCopiesQueue(t *testing.T) {
	srv, addr := bareMochi(t, nil)
	offlineQueue(t, srv, addr, "canary-resume", "canary/resume", 2)
	old, _ := srv.Clients.Get("canary-resume")
	queue := old.State.Inflight
	c := dialRaw(t, addr, 4, "canary-resume", false, packets.Properties{})
	if got := len(c.publishes(quiet)); got != 2 {
		t.Fatalf("resumed %d messages, want 2", got)
	}
	cur, _ := srv.Clients.Get("canary-resume")
	if cur == old || cur.State.Inflight == queue {
		t.Fatal("mochi now hands the old client's store itself to the new client: review handover.go")
	}
	if queue.Len() != 0 {
		t.Fatal("mochi no longer clears the old client's store: review handover.go")
	}
}

// stopOrderConn records what happens to it: writes, and the client's stop
// cause at the moment it is closed.
type stopOrderConn struct {
	net.Conn
	cl     *mqtt.Client
	events []string
}

func (c *stopOrderConn) Write(p []byte) (int, error) {
	c.events = append(c.events, "write")
	return len(p), nil
}

func (c *stopOrderConn) Close() error {
	c.events = append(c.events, fmt.Sprintf("close (cause %v)", c.cl.StopCause()))
	return nil
}

// Canary for the takeover note in hook.go (MOCHI.md row 36): mochi writes a
// DISCONNECT and then stops the client, and Stop closes the connection
// before it records the cause. A client that closes its side on reading the
// DISCONNECT can so end the read loop, which stops the client with EOF,
// before the cause is recorded.
func TestMochiCanaryStopClosesBeforeCause(t *testing.T) {
	srv, _ := bareMochi(t, nil)
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	conn := &stopOrderConn{Conn: a}
	cl := srv.NewClient(conn, "t", "canary-stop", false)
	conn.cl = cl
	_ = srv.DisconnectClient(cl, packets.ErrSessionTakenOver)
	if got := fmt.Sprint(conn.events); got != "[write close (cause <nil>)]" {
		t.Fatalf("DisconnectClient did %s, want [write close (cause <nil>)]: review the takeover note in dispatchHook.encode (MOCHI.md row 36)", got)
	}
	if cl.StopCause() != packets.ErrSessionTakenOver {
		t.Fatalf("cause after Stop: %v", cl.StopCause())
	}
}
