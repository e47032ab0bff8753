package broker

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// writePathPayload is message i's payload: sizes from a few bytes to
// beyond a pooled chunk, contents that tell every message apart.
func writePathPayload(i int) []byte {
	sizes := []int{7, 300, 2047, 2048, 4096, 40 << 10, 70 << 10}
	return bytes.Repeat(fmt.Appendf(nil, "%06d;", i), sizes[i%len(sizes)]/7+1)
}

// TestWritePathKeepsPacketsIntact: messages of every size, QoS 0 and 1,
// reach a subscriber whose socket is full much of the time, each intact and
// in order. The write path keeps mochi's buffers rather than copying them
// and mixes direct writes, writev of queued segments and pooled chunks
// (writer.go, outqueue.go); a buffer reused too early, or a partial write
// resumed at the wrong byte, shows here as a corrupt payload.
func TestWritePathKeepsPacketsIntact(t *testing.T) {
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			b, addr := newDoorBroker(t, DoorLimits{})
			sub := dialRaw(t, addr, 4, fmt.Sprintf("intact-%d", qos), true, packets.Properties{})
			sub.subscribe("intact/t", qos)
			const n = 400
			done := make(chan error, 1)
			go func() {
				for i := range n {
					if err := b.Server().Publish("intact/t", writePathPayload(i), false, qos); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			time.Sleep(300 * time.Millisecond) // let the socket fill
			for i := 0; i < n; {
				pk := sub.read(10 * time.Second)
				if pk.FixedHeader.Type != packets.Publish {
					t.Fatalf("message %d: got %v", i, pk.FixedHeader.Type)
				}
				if want := writePathPayload(i); !bytes.Equal(pk.Payload, want) {
					t.Fatalf("message %d: %d bytes starting %.14q, want %d bytes starting %.14q",
						i, len(pk.Payload), pk.Payload, len(want), want)
				}
				if qos == 1 {
					sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
				}
				if i%50 == 0 {
					time.Sleep(20 * time.Millisecond) // a slow reader now and then
				}
				i++
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDirectWritesOutliveDeadlines: a write straight to the socket does not
// wait and must not fail on a write deadline left behind — the connect
// timeout's, or the one the writer goroutine set for a blocking write —
// once it has passed (a direct write then failed "i/o timeout" and closed
// the connection of a client that had done nothing wrong).
func TestDirectWritesOutliveDeadlines(t *testing.T) {
	b := newBroker(t, Options{ConnectTimeout: 300 * time.Millisecond, WriteTimeout: 500 * time.Millisecond}, AnonymousPolicy{Allow: true})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP})
	sub := dialRaw(t, addr, 4, "deadlines", true, packets.Properties{})
	sub.subscribe("deadlines/t", 0)
	expect := func(what string, n int) {
		t.Helper()
		for i := range n {
			pk := sub.read(5 * time.Second)
			if pk.FixedHeader.Type != packets.Publish {
				t.Fatalf("%s: message %d of %d: got %v", what, i, n, pk.FixedHeader.Type)
			}
		}
	}
	time.Sleep(400 * time.Millisecond) // past the connect timeout
	if err := b.Server().Publish("deadlines/t", []byte("after connect timeout"), false, 0); err != nil {
		t.Fatal(err)
	}
	expect("after the connect timeout", 1)

	// Fill the socket so that the writer goroutine writes with a deadline,
	// read it all, and let that deadline pass.
	big := bytes.Repeat([]byte("x"), 64<<10)
	for range 200 {
		if err := b.Server().Publish("deadlines/t", big, false, 0); err != nil {
			t.Fatal(err)
		}
	}
	expect("the burst", 200)
	time.Sleep(700 * time.Millisecond)
	if err := b.Server().Publish("deadlines/t", []byte("after write timeout"), false, 0); err != nil {
		t.Fatal(err)
	}
	expect("after the write deadline", 1)
}
