package broker

import (
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Packet identifiers in both directions.
//
// MQTT gives each direction its own packet identifiers: a client numbers its
// QoS 1/2 publishes, SUBSCRIBEs and UNSUBSCRIBEs, the broker numbers the
// messages it sends, and the two may use the same number at the same time
// [MQTT-2.2.1-2]. mochi v2.7.9 keeps both in one store per client
// (cl.State.Inflight) keyed by the number alone, so
//   - a SUBSCRIBE whose identifier equals that of a message the broker has in
//     flight to the client is refused with 0x91 (packet identifier in use);
//     mosquitto_sub resubscribes on every reconnect with identifier 1, gets
//     "all subscriptions denied" while its queue is being resent, and exits;
//   - a client's QoS 1 publish with such an identifier deletes the broker's
//     message from the store (it is never resent);
//   - a client's QoS 2 re-send of a message whose PUBREC it already has is
//     answered with PUBREC 0x91 instead of 0x00 [MQTT-4.3.3-9].
//
// inboundIDs keeps mochi's store apart: each identifier the client chooses is
// handed to mochi unchanged when mochi has no message under it and is not
// about to number one with it, and otherwise replaced by a free one far from
// where mochi numbers its own; mochi's answers (PUBACK, PUBREC, PUBCOMP,
// SUBACK, UNSUBACK) get the client's identifier back. The mapping belongs to
// the session: a resumed session keeps it, so mochi's resent PUBREC for an
// unfinished QoS 2 publish carries the identifier the client used.
type inboundIDs struct {
	mu       sync.Mutex
	toMochi  map[uint16]uint16 // client's identifier -> mochi's, replaced ones only
	toClient map[uint16]uint16 // mochi's identifier -> client's
	// lastOut is the identifier mochi gave its latest message to the
	// client; it numbers the next one upward from there.
	lastOut atomic.Uint32
}

// nearOut is how far ahead of mochi's last outgoing identifier a client's
// identifier is not used as it is: mochi could number a message with it
// between the check here and mochi's processing of the client's packet.
const nearOut = 1024

// toBroker returns the identifier mochi sees for the client's identifier c
// of a packet that starts a flow (QoS 1/2 PUBLISH, SUBSCRIBE, UNSUBSCRIBE).
func (m *inboundIDs) toBroker(cl *mqtt.Client, c uint16) uint16 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if x, ok := m.toMochi[c]; ok {
		return x // the client's unfinished QoS 2 publish, or a re-send of it
	}
	if m.usable(cl, c, true) {
		return c
	}
	// Far from where mochi numbers its own messages.
	x := uint16(m.lastOut.Load()) + 32768
	for range 65535 {
		if x != 0 && m.usable(cl, x, false) {
			break
		}
		x++
	}
	if m.toMochi == nil {
		m.toMochi = make(map[uint16]uint16)
		m.toClient = make(map[uint16]uint16)
	}
	m.toMochi[c], m.toClient[x] = x, c
	return x
}

// usable reports whether mochi can see the client's flow under x. With own
// set, x is the client's own identifier: mochi's store may hold the client's
// unfinished QoS 2 publish under it (a PUBREC), which mochi then answers as
// in use, as it should.
func (m *inboundIDs) usable(cl *mqtt.Client, x uint16, own bool) bool {
	if _, taken := m.toClient[x]; taken {
		return false
	}
	if pk, ok := cl.State.Inflight.Get(x); ok && !(own && pk.FixedHeader.Type == packets.Pubrec) {
		return false
	}
	if d := x - uint16(m.lastOut.Load()); d <= nearOut && m.lastOut.Load() != 0 {
		return false
	}
	return true
}

// lookup returns the identifier mochi sees for the client's identifier c of
// a PUBREL.
func (m *inboundIDs) lookup(c uint16) uint16 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if x, ok := m.toMochi[c]; ok {
		return x
	}
	return c
}

// back returns the client's identifier for mochi's x in an answer to the
// client, forgetting the mapping when the answer ends the flow.
func (m *inboundIDs) back(x uint16, ends bool) uint16 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.toClient[x]
	if !ok {
		return x
	}
	if ends {
		delete(m.toClient, x)
		delete(m.toMochi, c)
	}
	return c
}

// packetIDHook applies inboundIDs to a connection's packets.
type packetIDHook struct {
	mqtt.HookBase
}

func (h *packetIDHook) ID() string { return "caddy-mqtt-packet-ids" }

func (h *packetIDHook) Provides(b byte) bool {
	return b == mqtt.OnQosPublish
}

// read gives the client's packet identifiers in a PUBLISH of QoS 1 or 2, a
// SUBSCRIBE, an UNSUBSCRIBE or a PUBREL mochi's numbering (called by
// readHook, read.go). It runs just before mochi processes the packet (mochi
// reads and processes one packet at a time), so the store it checks is the
// one mochi will see.
func (h *packetIDHook) read(cl *mqtt.Client, pk *packets.Packet) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	if pk.FixedHeader.Type == packets.Pubrel {
		pk.PacketID = cc.ids.lookup(pk.PacketID)
		return
	}
	pk.PacketID = cc.ids.toBroker(cl, pk.PacketID)
}

// encode gives mochi's answers the client's identifiers. A PUBREC
// 0x91 for a publish whose PUBREC mochi holds is the answer to the client's
// re-send of it (after a reconnect, or when the PUBREC was lost): the
// receiver must acknowledge it again with success and not deliver it twice
// [MQTT-4.3.3-9], as mosquitto does.
func (h *packetIDHook) encode(cl *mqtt.Client, pk *packets.Packet) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	switch pk.FixedHeader.Type {
	case packets.Pubrec:
		if pk.ReasonCode == packets.ErrPacketIdentifierInUse.Code {
			if held, ok := cl.State.Inflight.Get(pk.PacketID); ok && held.FixedHeader.Type == packets.Pubrec {
				pk.ReasonCode = packets.CodeSuccess.Code
				pk.Properties.ReasonString = ""
			}
		}
		pk.PacketID = cc.ids.back(pk.PacketID, pk.ReasonCode >= packets.ErrUnspecifiedError.Code)
	case packets.Puback, packets.Pubcomp, packets.Suback, packets.Unsuback:
		pk.PacketID = cc.ids.back(pk.PacketID, true)
	}
}

// OnQosPublish notes the identifiers mochi gives its messages to the client.
func (h *packetIDHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
		return
	}
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.ids.lastOut.Store(uint32(pk.PacketID))
	}
}
