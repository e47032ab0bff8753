package broker

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestClientThatNeverReadsIsClosed: an MQTT 5 client sends 6,000
// UNSUBSCRIBEs of 100 filters each (each answered by an UNSUBACK of over
// 100 bytes) and never reads: the broker closes the connection once about
// 2,000 replies wait, rather than buffering them without end (before, every
// reply was kept for as long as the client held the connection).
func TestClientThatNeverReadsIsClosed(t *testing.T) {
	b := newBroker(t, Options{}, AnonymousPolicy{Allow: true})
	// Small socket buffers on both ends, so that they hold little of what
	// the client does not read.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.(*net.TCPConn).SetWriteBuffer(4096)
		_ = b.Serve(conn, withSocket(conn, ConnInfo{Door: DoorTCP}))
	}()
	c := dialRaw(t, ln.Addr().String(), 5, "never-reads", true, packets.Properties{})
	if err := c.conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	var filters packets.Subscriptions
	for i := range 100 {
		filters = append(filters, packets.Subscription{Filter: fmt.Sprintf("none/%d", i)})
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
	closed := false
	for i := range 6000 {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: uint16(i + 1), Filters: filters, ProtocolVersion: 5}
		var out bytes.Buffer
		if err := pk.UnsubscribeEncode(&out); err != nil {
			t.Fatal(err)
		}
		if _, err := c.conn.Write(out.Bytes()); err != nil {
			closed = true // the broker closed it
			break
		}
	}
	// The broker works through what was sent, then closes: on a loaded
	// machine that takes a while.
	deadline := time.Now().Add(30 * time.Second)
	for !closed && b.Clients() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection of a client that does not read is still open after 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
