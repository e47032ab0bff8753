package broker

import (
	"log/slog"
	"testing"

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
