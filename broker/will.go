package broker

import (
	"bytes"
	"encoding/base64"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// willPropsKey names the user property that carries a will's own
// properties through mochi. mochi keeps only the user properties of a will
// (sendLWT builds the message from them): payload format, message expiry,
// content type, response topic and correlation data are lost [MQTT-3.1.3-9
// ff.]. At CONNECT they are packed into one extra user property of the will,
// which mochi carries everywhere the will goes (delivery, delayed will,
// retained message, storage), and unpacked when the message is written to a
// subscriber. A NUL character cannot appear in a client's UTF-8 strings
// [MQTT-1.5.4-2], so no client property is mistaken for it.
const willPropsKey = "\x00caddy-mqtt/will-properties"

type willPropsHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *willPropsHook) ID() string { return "caddy-mqtt-will-properties" }

func (h *willPropsHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnQosPublish:
		return true
	}
	return false
}

// OnConnect packs the will's properties into its user properties.
func (h *willPropsHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if !pk.Connect.WillFlag || cl.Properties.ProtocolVersion < 5 {
		return nil
	}
	wp := pk.Connect.WillProperties
	keep := packets.Properties{
		PayloadFormat:         wp.PayloadFormat,
		PayloadFormatFlag:     wp.PayloadFormatFlag,
		MessageExpiryInterval: wp.MessageExpiryInterval,
		ContentType:           wp.ContentType,
		ResponseTopic:         wp.ResponseTopic,
		CorrelationData:       wp.CorrelationData,
	}
	var buf bytes.Buffer
	keep.Encode(packets.WillProperties, packets.Mods{AllowResponseInfo: true}, &buf, 0)
	// Only the zero length: nothing to keep, unless the will is delayed:
	// mochi gives a delayed will the time it is due as its expiry, so it
	// would reach subscribers with Message Expiry Interval 1; written as a
	// packed will, encode puts the will's own (none) in place
	// (MOCHI.md).
	if buf.Len() <= 1 && wp.WillDelayInterval == 0 {
		return nil
	}
	user := append([]packets.UserProperty{}, cl.Properties.Will.User...)
	// Base64: the value must stay valid UTF-8, or a store that writes
	// JSON (bolt) would mangle it.
	cl.Properties.Will.User = append(user, packets.UserProperty{Key: willPropsKey, Val: base64.StdEncoding.EncodeToString(buf.Bytes())})
	return nil
}

// isPackedWill reports whether pk is a will message with its properties
// packed (small: see willPropsHook.encode).
func isPackedWill(pk *packets.Packet) bool {
	u := pk.Properties.User
	return pk.FixedHeader.Type == packets.Publish && len(u) > 0 && u[len(u)-1].Key == willPropsKey
}

// packedWill returns the properties packed into a will message (ok), and
// its user properties without them (will: it is one).
func packedWill(pk *packets.Packet) (wp packets.Properties, user []packets.UserProperty, will, ok bool) {
	if !isPackedWill(pk) {
		return wp, nil, false, false
	}
	last := pk.Properties.User[len(pk.Properties.User)-1]
	// A new slice: the packet shares it with the stored message.
	user = append([]packets.UserProperty(nil), pk.Properties.User[:len(pk.Properties.User)-1]...)
	if len(user) == 0 {
		user = nil
	}
	raw, err := base64.StdEncoding.DecodeString(last.Val)
	if err != nil {
		return wp, user, true, false
	}
	if _, err := wp.Decode(packets.WillProperties, bytes.NewBuffer(raw)); err != nil {
		return wp, user, true, false
	}
	return wp, user, true, true
}

// willExpiry is when a will message with a Message Expiry Interval expires
// (Unix seconds; 0 for none). Its lifetime starts when the will is
// published (MQTT 5 §3.1.3.2.4, as mosquitto does): mochi sets Created when
// the connection ends, and publishes a delayed will Will Delay Interval
// later (the packet keeps that interval). max_message_expiry (maxLife, 0
// for none) caps it, as it does for other messages.
func willExpiry(pk *packets.Packet, wp *packets.Properties, maxLife int64) int64 {
	if wp.MessageExpiryInterval == 0 {
		return 0
	}
	life := int64(wp.MessageExpiryInterval)
	if m := maxLife; m > 0 && m < life {
		life = m
	}
	return pk.Created + int64(pk.Connect.WillProperties.WillDelayInterval) + life
}

// OnQosPublish gives the copy of a will message that mochi keeps for a
// subscriber (while it waits in an offline session's queue, or for its
// acknowledgement) the will's expiry, so that mochi drops it once expired as
// it does other messages [MQTT-3.3.2-5]. mochi never sees the will's
// Message Expiry Interval (it travels packed), and expires only packets
// marked MQTT 5.
func (h *willPropsHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	wp, _, _, ok := packedWill(&pk)
	if !ok {
		return
	}
	exp := willExpiry(&pk, &wp, h.b.srv.Options.Capabilities.MaximumMessageExpiryInterval)
	if exp == 0 {
		return
	}
	// mochi calls this after storing the packet and before writing it, so
	// no acknowledgement can have removed it in between.
	stored, found := cl.State.Inflight.Get(pk.PacketID)
	if !found || stored.Created != pk.Created || stored.TopicName != pk.TopicName ||
		(stored.Expiry == exp && stored.ProtocolVersion == 5) {
		return
	}
	stored.Expiry, stored.ProtocolVersion = exp, 5
	cl.State.Inflight.Set(stored)
}

// encode unpacks them into a will message written to a subscriber,
// with the Message Expiry Interval counted down by the time the will has
// waited since it was published [MQTT-3.3.2-6].
//
// Most messages are not wills: the check comes first, in a small function.
// This runs on mochi's writer goroutine, whose stack the GC shrinks while
// the goroutine waits; with unpacking's 2.4 KB frame on it, the first
// packet after each collection grew the stack again (runtime.copystack, 5 %
// of the CPU with 1,000 subscribers).
func (h *willPropsHook) encode(cl *mqtt.Client, pk *packets.Packet) {
	if isPackedWill(pk) {
		h.unpack(pk)
	}
}

// unpack is encode's work for a will (isPackedWill).
func (h *willPropsHook) unpack(pk *packets.Packet) {
	wp, user, _, ok := packedWill(pk)
	pk.Properties.User = user
	if !ok {
		return
	}
	pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = wp.PayloadFormat, wp.PayloadFormatFlag
	pk.Properties.MessageExpiryInterval = 0
	if exp := willExpiry(pk, &wp, h.b.srv.Options.Capabilities.MaximumMessageExpiryInterval); exp > 0 {
		// As mochi does for other messages: at least 1 for one written
		// in the second it expires.
		pk.Properties.MessageExpiryInterval = uint32(max(exp-time.Now().Unix(), 1))
	}
	pk.Properties.ContentType = wp.ContentType
	pk.Properties.ResponseTopic = wp.ResponseTopic
	pk.Properties.CorrelationData = wp.CorrelationData
}
