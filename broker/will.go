package broker

import (
	"bytes"
	"encoding/base64"

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

type willPropsHook struct{ mqtt.HookBase }

func (h *willPropsHook) ID() string { return "caddy-mqtt-will-properties" }

func (h *willPropsHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnPacketEncode}, []byte{b})
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
	if buf.Len() <= 1 { // only the zero length: nothing to keep
		return nil
	}
	user := append([]packets.UserProperty{}, cl.Properties.Will.User...)
	// Base64: the value must stay valid UTF-8, or a store that writes
	// JSON (bolt) would mangle it.
	cl.Properties.Will.User = append(user, packets.UserProperty{Key: willPropsKey, Val: base64.StdEncoding.EncodeToString(buf.Bytes())})
	return nil
}

// OnPacketEncode unpacks them into a will message written to a subscriber.
func (h *willPropsHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Publish || len(pk.Properties.User) == 0 {
		return pk
	}
	last := pk.Properties.User[len(pk.Properties.User)-1]
	if last.Key != willPropsKey {
		return pk
	}
	// A new slice: the packet shares it with the stored message.
	pk.Properties.User = append([]packets.UserProperty(nil), pk.Properties.User[:len(pk.Properties.User)-1]...)
	if len(pk.Properties.User) == 0 {
		pk.Properties.User = nil
	}
	raw, err := base64.StdEncoding.DecodeString(last.Val)
	if err != nil {
		return pk
	}
	var wp packets.Properties
	if _, err := wp.Decode(packets.WillProperties, bytes.NewBuffer(raw)); err != nil {
		return pk
	}
	pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = wp.PayloadFormat, wp.PayloadFormatFlag
	pk.Properties.MessageExpiryInterval = wp.MessageExpiryInterval
	pk.Properties.ContentType = wp.ContentType
	pk.Properties.ResponseTopic = wp.ResponseTopic
	pk.Properties.CorrelationData = wp.CorrelationData
	return pk
}
