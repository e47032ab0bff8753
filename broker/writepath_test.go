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
