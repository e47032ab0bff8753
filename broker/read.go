package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// readHook is the one hook that takes mochi's OnPacketRead, on behalf of the
// concerns that look at or change the packets mochi reads, as encodeHook is
// for the packets it writes (MOCHI.md row 34): mochi passes the 800-byte
// packets.Packet by value into and out of every hook that provides
// OnPacketRead, so with one hook per concern each packet read (a PUBACK for
// every QoS 1 delivery) was copied 8 times, 590 ns per packet in
// BenchmarkOnPacketRead. Each concern keeps its read method in its own file
// and is called only for the packet types it reads, in the order their
// hooks are registered in (New).
type readHook struct {
	mqtt.HookBase
	metrics *metricsHook      // metrics.go: messages and payload bytes in; nil without metrics
	flow    *flowHook         // flow.go: acknowledgements open the window
	ids     *packetIDHook     // packetids.go: the client's packet identifiers
	check   *publishCheckHook // publishcheck.go: what mochi does not check in a PUBLISH
}

func (h *readHook) ID() string { return "caddy-mqtt-read" }

func (h *readHook) Provides(b byte) bool { return b == mqtt.OnPacketRead }

// OnPacketRead returns packets.ErrRejectPacket when the connection is to end
// (mochi then stops reading and drops the packet).
func (h *readHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if h.metrics != nil {
			h.metrics.read(cl, &pk)
		}
		if pk.FixedHeader.Qos > 0 {
			h.ids.read(cl, &pk)
		}
		if err := h.check.read(cl, &pk); err != nil {
			return pk, err
		}
	case packets.Puback, packets.Pubcomp, packets.Pubrec:
		h.flow.read(cl, &pk)
	case packets.Subscribe, packets.Unsubscribe, packets.Pubrel:
		h.ids.read(cl, &pk)
	}
	return pk, nil
}
