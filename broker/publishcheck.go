package broker

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// publishCheckHook answers the client PUBLISHes mochi mishandles before
// they reach mochi's processing:
//
//   - A wildcard in a PUBLISH topic is a Topic Name invalid (0x90)
//     [MQTT-3.3.2-2]; mochi says 0x82 Protocol Error.
//   - A QoS 1/2 PUBLISH to $SYS: mochi drops it without any
//     acknowledgement, so the publisher waits forever. Like mosquitto, the
//     broker acknowledges it (0x87 Not authorized for MQTT 5) and drops it.
//   - A topic alias is resolved here, before mochi's ACL check, which
//     otherwise sees the empty topic of a PUBLISH that only names an alias
//     and refuses it (0x87). Aliases are accepted up to TopicAliasMaximum
//     (advertised in the CONNACK, see acks.go); mochi refuses higher ones
//     with 0x94 [MQTT-3.3.2-9], and an alias never defined is a Protocol
//     Error [MQTT-3.3.2-8].
//   - MQTT 3.1.1 has no way to refuse a PUBLISH: mochi closes the
//     connection of a 3.1.1 client whose QoS 1/2 publish the ACL refuses,
//     and its library reconnects and retries in a loop. Like mosquitto,
//     the broker completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP)
//     and drops the message: OnACLCheck lets the refused publish through
//     and OnPublish marks it ignored (mochi then neither retains nor
//     delivers it). dispatchHook, added first, still decides: this hook's
//     OnACLCheck only runs when that one refused.
type publishCheckHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *publishCheckHook) ID() string { return "caddy-mqtt-publish-check" }

func (h *publishCheckHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnACLCheck, mqtt.OnPublish:
		return true
	}
	return false
}

// read checks a PUBLISH before mochi processes it (called by readHook,
// read.go); an error ends the connection.
func (h *publishCheckHook) read(cl *mqtt.Client, pk *packets.Packet) error {
	if cl.Net.Inline {
		return nil
	}
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return nil
	}
	cc.refusedPublish = "" // a mark is for the publish being processed only
	v5 := cl.Properties.ProtocolVersion >= 5
	if strings.ContainsAny(pk.TopicName, "+#") {
		return h.refuse(cl, packets.ErrTopicNameInvalid) // [MQTT-3.3.2-2]
	}
	if v5 && pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias > 0 &&
		int(pk.Properties.TopicAlias) <= h.b.opts.TopicAliasMaximum {
		topic := cl.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, pk.TopicName)
		if topic == "" {
			return h.refuse(cl, packets.ErrProtocolViolationNoTopic) // [MQTT-3.3.2-8]
		}
		pk.TopicName = topic
	}
	if pk.FixedHeader.Qos > 0 && pk.PacketID != 0 && isSysPrefix(pk.TopicName) {
		// mochi returns from processPublish without a word for these.
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    pk.PacketID,
		}
		if pk.FixedHeader.Qos == 2 {
			ack.FixedHeader.Type = packets.Pubrec
		}
		if v5 {
			ack.ReasonCode = packets.ErrNotAuthorized.Code
		}
		// The 3.1.1 QoS 2 flow goes on with PUBREL, which mochi answers
		// with PUBCOMP although it holds no such packet identifier.
		if err := cl.WritePacket(ack); err != nil {
			return packets.ErrRejectPacket
		}
	}
	return nil
}

// isSysPrefix is mochi's test for a publish it drops (IsValidFilter):
// "$SYS" in any case.
func isSysPrefix(topic string) bool {
	return len(topic) >= 4 && strings.EqualFold(topic[:4], "$SYS")
}

// refuse ends the connection for a protocol error found in a packet: MQTT 5
// clients get a DISCONNECT with the reason first. The returned error makes
// mochi stop reading.
func (h *publishCheckHook) refuse(cl *mqtt.Client, code packets.Code) error {
	if cl.Properties.ProtocolVersion >= 5 {
		h.b.disconnect(cl, code)
	} else {
		cl.Stop(code)
	}
	return packets.ErrRejectPacket
}

// OnACLCheck runs only when dispatchHook refused (mochi ORs the hooks). It
// lets a refused MQTT 3 publish through to OnPublish, which drops it.
func (h *publishCheckHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !write || cl.Net.Inline || cl.Properties.ProtocolVersion >= 5 {
		return false
	}
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok || cc.client.Load() == nil {
		return false
	}
	cc.refusedPublish = topic
	return true
}

// OnPublish drops the publish OnACLCheck let through: mochi completes its
// QoS flow but neither retains nor delivers it.
func (h *publishCheckHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok || cc.refusedPublish == "" {
		return pk, nil
	}
	refused := cc.refusedPublish == pk.TopicName
	cc.refusedPublish = ""
	if refused {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}
