package broker

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// readCounter counts the reads that reach the socket, and the largest.
type readCounter struct {
	net.Conn
	reads   int
	largest int
}

func (c *readCounter) Read(p []byte) (int, error) {
	c.reads++
	c.largest = max(c.largest, len(p))
	return c.Conn.Read(p)
}

// TestReadAheadKeepsTheStream: whatever the sizes of the writes and of the
// reads, the bytes arrive whole and in order, and the end of the stream
// comes after the last of them.
func TestReadAheadKeepsTheStream(t *testing.T) {
	client, server := tcpPair(t)
	rng := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	go func() {
		rest := want
		for len(rest) > 0 {
			n := min(len(rest), 1+rng.IntN(40<<10))
			if _, err := client.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		client.Close()
	}()
	ra := &readAhead{Conn: server, on: true}
	var got []byte
	buf := make([]byte, 70<<10)
	rr := rand.New(rand.NewPCG(3, 4))
	for {
		n, err := ra.Read(buf[:1+rr.IntN(len(buf)-1)])
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written (or not in order)", len(got), len(want))
	}
	if ra.block != nil {
		t.Error("a block is still held at the end of the stream")
	}
}

// TestReadAheadSavesReads: a client that publishes 4 KiB messages in bursts
// is read in blocks. mochi reads each such packet in two reads (the fill of
// its 1 KiB buffer that brings the fixed header, then the rest of the body
// into the packet); without read-ahead each reached the socket.
func TestReadAheadSavesReads(t *testing.T) {
	client, server := tcpPair(t)
	const packets, size = 64, 4096
	var burst []byte
	for range packets {
		burst = append(burst, 0x30, 0x80, 0x20) // PUBLISH, remaining length 4096
		burst = append(burst, make([]byte, size)...)
	}
	go client.Write(burst)

	under := &readCounter{Conn: server}
	r := bufio.NewReaderSize(&readAhead{Conn: under, on: true}, 1024) // as mochi reads
	body := make([]byte, size)
	for i := range packets {
		if _, err := r.Discard(3); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	// 64 packets of 4 KiB in blocks of 16 KiB: about 17 reads, plus a few
	// where the reader caught up with the writer. Straight through, 128.
	if under.reads > packets/2 {
		t.Errorf("%d reads from the socket for %d packets of %d bytes", under.reads, packets, size)
	}
}

// TestReadAheadIdleHoldsNoBlock: a connection that goes quiet after a burst
// gives its block back and waits for more in mochi's own buffer.
func TestReadAheadIdleHoldsNoBlock(t *testing.T) {
	client, server := tcpPair(t)
	ra := &readAhead{Conn: server, on: true}
	if _, err := client.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1024)
	if _, err := io.ReadFull(ra, p); err != nil { // fills p: busy
		t.Fatal(err)
	}
	// The rest of the burst comes through a block, which is returned
	// once read.
	for total := 1024; total < 3000; {
		n, err := ra.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if ra.block != nil || ra.busy {
		t.Fatalf("after the burst: block held %v, busy %v", ra.block != nil, ra.busy)
	}
	// A read now waits with no block.
	done := make(chan struct{})
	go func() {
		defer close(done)
		ra.Read(p)
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("read returned with nothing sent")
	default:
	}
	client.Write([]byte{1})
	<-done
	if ra.block != nil {
		t.Fatal("a block is held after a one-byte read")
	}
}

// TestNoReadAheadBeforeConnect: until its CONNECT has been read, a client
// gets no block: one that sends a kilobyte of a large CONNECT and waits must
// not make the broker hold 16 KiB for it.
func TestNoReadAheadBeforeConnect(t *testing.T) {
	client, server := tcpPair(t)
	under := &readCounter{Conn: server}
	ra := &readAhead{Conn: under}
	c := &packetLimitConn{Conn: ra, limit: 1 << 20, connectLimit: 64 << 10, ahead: ra}
	connect := append([]byte{0x10, 0x80, 0x50}, make([]byte, 10240)...) // remaining length 10240
	r := bufio.NewReaderSize(c, 1024)                                   // as mochi reads
	// The CONNECT arrives a kilobyte at a time, each one filling the read.
	go func() {
		for rest := connect; len(rest) > 0; {
			n := min(len(rest), 1024)
			client.Write(rest[:n])
			rest = rest[n:]
			time.Sleep(5 * time.Millisecond)
		}
		client.Write(bytes.Repeat([]byte{0x30, 0x80, 0x20}, 1)) // a PUBLISH of 4 KiB follows
		client.Write(make([]byte, 4096))
	}()
	for range 3 { // the fixed header, byte by byte, as mochi reads it
		if _, err := r.ReadByte(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.ReadFull(r, make([]byte, len(connect)-3)); err != nil {
		t.Fatal(err)
	}
	if under.largest >= readAheadSize {
		t.Fatalf("a %d-byte read before CONNECT was complete", under.largest)
	}
	if !ra.on {
		t.Fatal("read-ahead not started once CONNECT was read")
	}
	if _, err := io.ReadFull(r, make([]byte, 3+4096)); err != nil {
		t.Fatal(err)
	}
}
