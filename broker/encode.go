package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// encodeHook is the one hook that takes mochi's OnPacketEncode, on behalf of
// the concerns that change the packets mochi writes; each keeps its own
// encode method, in its own file. mochi passes the 800-byte packets.Packet
// by value into and out of every hook that provides OnPacketEncode, for
// every packet it writes: with one hook per concern that was 7 hooks and
// 14 copies (11 KB) for each delivery of a 64-byte message (MOCHI.md row
// 34). Here it is 2 copies, and a PUBLISH meets the 2 concerns that change
// PUBLISH packets. The calls are direct, not through an interface or a
// list: the packet then stays on the stack (an interface call with &pk
// would move it to the heap, 800 bytes per packet).
type encodeHook struct {
	mqtt.HookBase
	dispatch *dispatchHook   // hook.go: MQTT 3 CONNACK codes, no DISCONNECT to MQTT 3
	ids      *packetIDHook   // packetids.go: the client's packet identifiers
	session  *sessionHook    // session.go: Session Present as decided
	handover *handoverHook   // handover.go: the successor is registered
	acks     *ackEncoder     // acks.go: what acknowledgements and the CONNACK carry
	order    *orderHook      // storage.go: a resumed queue in order
	will     *willPropsHook  // will.go: a will's own properties
	publish  *publishEncoder // encodepublish.go: larger PUBLISH packets encoded into pooled buffers
}

func (h *encodeHook) ID() string { return "caddy-mqtt-encode" }

func (h *encodeHook) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

// OnPacketEncode calls each concern only for the packet types it changes
// (their encode methods do not check the type again), in the order their
// hooks are registered in (New), willPropsHook after orderHook: the queued message orderHook puts
// in place of the one mochi writes is a will too, at times, to be unpacked
// and counted down.
func (h *encodeHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		h.order.encode(cl, &pk)
		h.will.encode(cl, &pk)
		h.publish.encode(cl, &pk) // last: it writes the packet as it is now
	case packets.Puback, packets.Pubrec, packets.Pubcomp, packets.Suback, packets.Unsuback:
		h.ids.encode(cl, &pk)
		h.acks.encode(cl, &pk)
	case packets.Pubrel:
		h.acks.encode(cl, &pk)
	case packets.Connack:
		h.dispatch.encode(cl, &pk)
		h.session.encode(cl, &pk)
		h.handover.encode(cl, &pk)
		h.acks.encode(cl, &pk)
	case packets.Disconnect:
		h.dispatch.encode(cl, &pk)
	}
	return pk
}
