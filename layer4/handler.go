// Package l4mqtt is the TCP/TLS door of caddy-mqtt: the layer4.handlers.mqtt
// handler and the layer4.matchers.mqtt matcher for the caddy-l4 app. (Its
// folder is layer4/; the package is named like caddy-l4's own l4* handler
// packages so that it does not shadow caddy-l4's layer4 package.)
package l4mqtt

import (
	"crypto/tls"
	"errors"
	"net"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
	"github.com/caddy-mqtt/caddy-mqtt/caddymqtt"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler hands a layer4 connection to the mqtt app's broker. Placed after
// the layer4 tls handler it serves MQTT over TLS (the "tls" door); on its own
// it serves plain MQTT (the "tcp" door). It is a terminal handler: it returns
// when the MQTT session ends.
type Handler struct {
	caddymqtt.DoorOptions

	app    *caddymqtt.App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.mqtt",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the mqtt app (loading it with defaults if the config has
// none).
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	var err error
	h.app, err = caddymqtt.AppFrom(ctx)
	if err != nil {
		return err
	}
	noteDoors(ctx, h.app) // doors.go
	return h.DoorOptions.ProvisionAuth(h.app, broker.DoorGroup(broker.DoorTCP))
}

// Handle serves the MQTT session. The layer4 server closes the connection
// as soon as Handle returns, so it blocks for the whole session.
func (h *Handler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	b, err := h.app.Broker()
	if err != nil {
		return err
	}
	info := h.ConnInfo(broker.DoorTCP)
	if states, _ := cx.GetVar(layer4.TLSConnectionStatesVarName).([]*tls.ConnectionState); len(states) > 0 {
		info.Door = broker.DoorTLS
		info.TLS = states[len(states)-1]
	}
	switch sock := cx.Conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		// Nothing between the broker and the socket on the way out (no
		// TLS): the broker writes to it directly, without waiting on it.
		// layer4's own count of bytes written then misses those writes;
		// the mqtt metrics count them.
		info.Socket = sock
	}
	caddymqtt.NoteDoor(h.logger, info.Door, cx.LocalAddr())
	// cx.RemoteAddr is the real client when a proxy_protocol handler ran
	// before this one.
	err = b.Serve(cx, info)
	if errors.Is(err, broker.ErrClosed) {
		return nil
	}
	if err != nil {
		// A client's protocol error is the client's problem, not the
		// server's: keep it out of the ERROR level layer4 uses for handler
		// errors.
		h.logger.Debug("mqtt session ended", zap.String("remote", cx.RemoteAddr().String()), zap.Error(err))
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mqtt {
//		allow_anonymous [true|false]
//		use_identity_as_username [true|false]
//		use_subject_as_username [true|false]
//		max_connections <n>
//		max_packet_size <size>
//		max_inflight_messages <n>
//		max_queued_messages <n>
//		password_file <path>
//		acl_file <path>
//		name <name>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume handler name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		ok, err := h.UnmarshalDoorOption(d)
		if err != nil {
			return err
		}
		if !ok {
			return d.Errf("unknown mqtt option '%s'", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Handler)(nil)
	_ layer4.NextHandler    = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
