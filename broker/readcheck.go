package broker

import (
	"errors"

	"github.com/mochi-mqtt/server/v2/packets"
)

// maxCheckedPacket is the largest packet whose decoding is checked before
// mochi reads it; larger ones (rare after CONNECT: big publishes) are left to
// mochi alone, so the check never holds a second copy of a large payload.
const maxCheckedPacket = 64 << 10

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
