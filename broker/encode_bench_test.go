package broker

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// BenchmarkOnPacketEncode: what the broker's hooks add to each PUBLISH
// mochi writes (mochi's Hooks.OnPacketEncode over all of them). With a hook
// per concern it was 416 ns; with encodeHook 152 ns (encode.go).
func BenchmarkOnPacketEncode(b *testing.B) {
	br := newBroker(b, Options{Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
	hooks := mochiHooks(br.srv)
	cl := br.srv.NewClient(nil, "t", "bench", false)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte("x")}
	b.ReportAllocs()
	for b.Loop() {
		pk = hooks.OnPacketEncode(cl, pk)
	}
}

// BenchmarkOnPacketRead: what mochi's Hooks.OnPacketRead over the broker's
// hooks costs for each packet it reads, a PUBLISH and a PUBACK (one per
// QoS 1 delivery), apart from what each concern does with it.
func BenchmarkOnPacketRead(b *testing.B) {
	br := newBroker(b, Options{Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
	hooks := mochiHooks(br.srv)
	cl := br.srv.NewClient(nil, "t", "bench", false)
	for _, pk := range []packets.Packet{
		{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7, TopicName: "a/b", Payload: []byte("x")},
		{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7},
	} {
		b.Run(packets.PacketNames[pk.FixedHeader.Type], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pk, _ = hooks.OnPacketRead(cl, pk)
			}
		})
	}
}

// BenchmarkWritePublish: mochi's WritePacket for one subscriber on a TCP
// door, payloads of several sizes, with the larger PUBLISH packets encoded
// by publishEncoder (encodepublish.go) or, "mochi", all by mochi: the write
// path's CPU and allocations per delivery, up to the socket.
func BenchmarkWritePublish(b *testing.B) {
	for _, size := range []int{64, 512, 4096, 65536} {
		for _, mochiEncodes := range []bool{false, true} {
			name := fmt.Sprintf("%dB", size)
			if mochiEncodes {
				name += "/mochi"
			}
			b.Run(name, func(b *testing.B) {
				br := newBroker(b, Options{Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
				sub := dialRaw(b, serveDoor(b, br, ConnInfo{Door: DoorTCP}), 4, "bench-sub", true, packets.Properties{})
				// dialRaw leaves the read deadline of its CONNACK set: a run
				// longer than that would stop reading, fill the queue and spin.
				_ = sub.conn.SetReadDeadline(time.Time{})
				go func() { _, _ = io.Copy(io.Discard, sub.r) }()
				cl, ok := br.srv.Clients.Get("bench-sub")
				if !ok {
					b.Fatal("not connected")
				}
				for _, h := range mochiHooks(br.srv).GetAll() {
					if e, ok := h.(*encodeHook); ok {
						e.publish.off = mochiEncodes
					}
				}
				pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "bench/t", Payload: make([]byte, size)}
				cc := cl.Net.Conn.(*clientConn)
				queued := func() int {
					cc.wmu.Lock()
					defer cc.wmu.Unlock()
					return cc.waiting()
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				n := 0
				for b.Loop() {
					if err := cl.WritePacket(pk); err != nil {
						b.Fatal(err)
					}
					// Within max_queued_messages, which would drop the rest.
					if n++; n%64 == 0 {
						for queued() > 256 {
							if cl.Closed() {
								b.Fatal("subscriber disconnected")
							}
							runtime.Gosched()
						}
					}
				}
			})
		}
	}
}
