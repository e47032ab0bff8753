package broker

import (
	"errors"

	"github.com/mochi-mqtt/server/v2/packets"
)

// maxCheckedPacket is the largest PUBLISH captured whole for the decoding
// check. Of a larger one only the head (topic, packet identifier,
// properties) is captured and checked, as soon as it has arrived: the payload
// is opaque to decoding, and the check never holds a second copy of a large
// payload. Other packets have no payload and are captured whole (bounded by
// max_packet_size, as mochi's own buffer is). Before, packets over this size
// were left to mochi, which closed an MQTT 5 connection on a malformed one
// without DISCONNECT.
const maxCheckedPacket = 64 << 10

// captureHead captures, of chunk (the next bytes of a large PUBLISH), only
// what the head still needs, and checks the head once it is complete.
func (c *packetLimitConn) captureHead(chunk []byte) error {
	for c.capturing && len(chunk) > 0 {
		want, known := publishHeadLen(c.typeByte, c.body)
		if known && len(c.body) >= want {
			return c.checkPacket()
		}
		take := min(want-len(c.body), len(chunk))
		c.body = append(c.body, chunk[:take]...)
		chunk = chunk[take:]
	}
	if want, known := publishHeadLen(c.typeByte, c.body); c.capturing && known && len(c.body) >= want {
		return c.checkPacket()
	}
	return nil
}

// publishHeadLen returns the length of a PUBLISH's head (everything before
// the payload) when b, its first bytes, is long enough to tell (known);
// otherwise the length b must reach before more can be told.
func publishHeadLen(typeByte byte, b []byte) (n int, known bool) {
	if len(b) < 2 {
		return 2, false
	}
	n = 2 + (int(b[0])<<8 | int(b[1]))
	if (typeByte>>1)&3 > 0 {
		n += 2
	}
	l, shift := 0, 0
	for i := range 4 {
		if len(b) < n+i+1 {
			return n + i + 1, false
		}
		v := b[n+i]
		l |= int(v&0x7f) << shift
		shift += 7
		if v&0x80 == 0 {
			return n + i + 1 + l, true
		}
	}
	// A property length over four bytes: decoding fails on what is there.
	return n + 4, true
}

// checkPacket decodes the packet that has just passed through the
// connection, as mochi is about to, before mochi sees its last bytes. mochi
// closes the connection on a packet it cannot decode without telling an
// MQTT 5 client why; failing the read here lets readFailed send DISCONNECT
// with the reason (0x81 Malformed Packet, 0x82 Protocol Error, ...) first.
// Only MQTT 5 connections are checked (keepaliveHook sets check at CONNECT):
// MQTT 3 has no server DISCONNECT.
func (c *packetLimitConn) checkPacket() error {
	c.capturing = false
	pk := packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(c.typeByte); err != nil {
		// Reserved flags or QoS 3 make a Malformed Packet [MQTT-2.1.3-1]
		// [MQTT-3.3.1-4]; mochi calls QoS 3 a protocol violation.
		return errDecode{code: packets.ErrMalformedPacket, err: err}
	}
	pk.FixedHeader.Remaining = len(c.body)
	body := c.body
	var err error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Subscribe:
		err = pk.SubscribeDecode(body)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Auth:
		err = pk.AuthDecode(body)
	case packets.Pingreq, packets.Connect:
		// Nothing to decode; a second CONNECT mochi refuses itself, with
		// DISCONNECT 0x82.
	default:
		// CONNACK, SUBACK, ... from a client, or type 0/15.
		err = packets.ErrProtocolViolation
	}
	if cap(c.body) > 4<<10 {
		c.body = nil // an idle connection keeps no large buffer
	}
	if err != nil {
		return decodeError(err)
	}
	return nil
}

// errDecode marks a decoding failure found by checkPacket, with the reason
// code for the DISCONNECT.
type errDecode struct {
	code packets.Code
	err  error
}

func (e errDecode) Error() string { return "mqtt packet: " + e.err.Error() }
func (e errDecode) Unwrap() error { return e.err }

func decodeError(err error) error {
	var code packets.Code
	if !errors.As(err, &code) || code.Code < packets.ErrUnspecifiedError.Code {
		code = packets.ErrMalformedPacket
	}
	return errDecode{code: code, err: err}
}
