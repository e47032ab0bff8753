package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ackEncoder makes the acknowledgements mochi writes carry what MQTT 5 allows
// and nothing else, as mosquitto's do:
//
//   - mochi answers a QoS 1 PUBLISH with reason code 0x01 ("granted QoS 1",
//     a SUBACK code) instead of 0x00 Success [MQTT-3.4.2-1]. Without
//     properties the encoder leaves the reason code out and nobody sees it;
//     with properties it is written, and strict clients (MQTT.js) drop the
//     PUBACK.
//   - mochi copies the PUBLISH's properties into its acknowledgement (the
//     User Properties of the message end up in the PUBACK). New turns that
//     off (Compatibilities.NoInheritedPropertiesOnAck); this encoder clears
//     whatever is left.
//   - Reason Strings are optional on PUBACK, PUBREC, PUBREL, PUBCOMP,
//     SUBACK and UNSUBACK; devices pay for them on every refused message,
//     so they are left out there. CONNACK and DISCONNECT keep theirs,
//     which [MQTT-3.1.2-29] allows even with Request Problem Information 0.
//
// It also fills in the CONNACK properties mochi does not send: Maximum
// Packet Size (the door's limit) and Topic Alias Maximum (what the broker
// accepts; mochi advertises nothing, which tells clients 0).
//
// It is an encoder of encodeHook (encode.go), not a hook of its own.
type ackEncoder struct {
	b *Broker
}

func (h *ackEncoder) encode(cl *mqtt.Client, pk *packets.Packet) {
	if cl.Properties.ProtocolVersion < 5 {
		return
	}
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code && pk.ReasonCode != packets.CodeNoMatchingSubscribers.Code {
			pk.ReasonCode = packets.CodeSuccess.Code
		}
		pk.Properties = packets.Properties{}
	case packets.Suback, packets.Unsuback:
		pk.Properties = packets.Properties{}
	case packets.Connack:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			pk.Properties.TopicAliasMaximum = uint16(max(h.b.opts.TopicAliasMaximum, 0))
			if cc, ok := cl.Net.Conn.(*clientConn); ok {
				if plc, ok := cc.Conn.(*packetLimitConn); ok {
					pk.Properties.MaximumPacketSize = plc.limit
				}
			}
		}
	}
}
