package broker

import (
	"errors"
	"net"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// keepaliveHook applies max_keepalive at CONNECT and tells the connection's
// framing check (packetLimitConn) who the client is, for the exact
// keepalive deadline and for the DISCONNECT sent on read errors
// (readerrors.go).
type keepaliveHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *keepaliveHook) ID() string { return "caddy-mqtt-keepalive" }

func (h *keepaliveHook) Provides(b byte) bool {
	return b == mqtt.OnConnect
}

// OnConnect caps the keep alive as mosquitto's max_keepalive does: an MQTT 5
// client asking for more than the cap, or for 0 (none), gets the cap as
// Server Keep Alive in its CONNACK [MQTT-3.2.2-21]; an MQTT 3 client, which
// cannot be told, is refused with return code 2.
func (h *keepaliveHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return nil
	}
	limit := h.b.opts.MaxKeepalive
	if door := cc.info.Limits.MaxKeepalive; door > 0 {
		limit = door
	}
	if limit > 0 && limit < 65535 && (cl.State.Keepalive > limit || cl.State.Keepalive == 0) {
		if cl.Properties.ProtocolVersion < 5 {
			h.b.log.Info("mqtt connection refused",
				"client", cl.ID, "door", string(cc.info.Door), "remote", cl.Net.Remote,
				"reason", "keep alive over max_keepalive", "keepalive", cl.State.Keepalive, "max_keepalive", limit)
			// dispatchHook turns 0x85 into the MQTT 3 return code 2.
			_ = h.b.srv.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
			return packets.ErrClientIdentifierNotValid
		}
		cl.State.Keepalive = limit
		cl.State.ServerKeepalive = true
	}
	if plc, ok := cc.Conn.(*packetLimitConn); ok {
		plc.cl = cl
		plc.version = cl.Properties.ProtocolVersion
		plc.keepalive = cl.State.Keepalive
		plc.check = plc.version >= 5 // readcheck.go
	}
	return nil
}

// SetReadDeadline is where mochi's keepalive deadline arrives (through
// clientConn.SetDeadline, after every packet it reads). mochi computes it in
// whole seconds, 1.5 × keep alive rounded down, so a client with keep alive
// 1 s that pings every second is cut off at 1.0 s. The deadline is replaced
// with the exact 1.5 × keep alive [MQTT-3.1.2-24]. Only mochi's read loop
// calls it, after OnConnect has set keepalive.
func (c *packetLimitConn) SetReadDeadline(t time.Time) error {
	if c.keepalive > 0 && !t.IsZero() {
		t = time.Now().Add(time.Duration(c.keepalive) * 1500 * time.Millisecond)
	}
	return c.Conn.SetReadDeadline(t)
}

// readFailed is called with the error that ends a read: MQTT 5 clients are
// told why with a DISCONNECT before the connection closes (mochi closes
// without one), and a packet over the size limit is logged.
func (c *packetLimitConn) readFailed(err error) error {
	var code packets.Code
	var ne net.Error
	var de errDecode
	switch {
	case errors.As(err, &de):
		code = de.code
	case errors.Is(err, packets.ErrPacketTooLarge):
		code = packets.ErrPacketTooLarge
		if c.cc != nil {
			id := ""
			if c.cl != nil {
				id = c.cl.ID
			}
			c.cc.broker.log.Info("mqtt packet over max_packet_size, closing the connection",
				"client", id, "door", string(c.cc.info.Door), "remote", hostOf(c.cc.RemoteAddr()),
				"size", c.tooLarge, "max_packet_size", c.limit)
		}
	case errors.Is(err, packets.ErrMalformedVariableByteInteger):
		code = packets.ErrMalformedPacket
	case errors.As(err, &ne) && ne.Timeout() && c.keepalive > 0:
		code = packets.ErrKeepAliveTimeout
	default:
		return err
	}
	if c.cl != nil && c.version >= 5 && c.cc != nil {
		c.cc.broker.disconnect(c.cl, code)
	}
	return err
}
