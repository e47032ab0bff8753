package broker

import (
	"net"
	"runtime"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

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
