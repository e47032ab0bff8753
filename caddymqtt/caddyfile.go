package caddymqtt

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("mqtt", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("mqtt", parseHandlerDirective)
	// Before respond (which would answer the upgrade request itself) and
	// before reverse_proxy.
	httpcaddyfile.RegisterDirectiveOrder("mqtt", httpcaddyfile.Before, "respond")
}

// parseGlobalOption sets up the mqtt app from the global option. Syntax:
//
//	mqtt {
//		allow_anonymous [true|false]
//		max_packet_size <size>
//		max_connect_size <size>
//		max_queued_messages <n>
//		max_inflight_messages <n>
//		max_connections <n>
//		max_subscriptions <n>
//		max_keepalive <seconds>
//		topic_alias_maximum <n>
//		max_connection_rate <n> [<per duration>]
//		connect_timeout <duration>
//		sys_interval <duration>
//		max_message_expiry <duration>
//		shutdown_timeout <duration>
//		storage <memory|bolt> [<path>] [{
//			lock_timeout <duration>
//		}]
//		tls_names <names...>
//		cluster nats { (see unmarshalCluster) }
//		password_file <path>
//		acl_file <path>
//		user <name> <password hash>
//		acl {
//			user <name>
//			topic [read|write|readwrite|deny] <filter>
//			pattern [read|write|readwrite|deny] <filter>
//		}
//		use_identity_as_username [true|false]
//		use_subject_as_username [true|false]
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if existing != nil {
		prev, ok := existing.(httpcaddyfile.App)
		if !ok {
			return nil, d.Errf("existing mqtt config of unexpected type %T", existing)
		}
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, d.Errf("parsing existing mqtt config: %v", err)
		}
	}
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "mqtt", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens (see
// parseGlobalOption for the syntax).
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		var err error
		switch opt {
		case "allow_anonymous":
			a.AllowAnonymous, err = ParseBoolArg(d)
		case "max_packet_size":
			a.MaxPacketSize, err = parseSizeArg(d)
		case "max_connect_size":
			a.MaxConnectSize, err = parseSizeArg(d)
		case "max_queued_messages":
			a.MaxQueuedMessages, err = parseIntArg(d, 65535)
		case "max_inflight_messages":
			a.MaxInflightMessages, err = parseIntArg(d, 65535)
		case "max_connections":
			a.MaxConnections, err = parseIntArg(d, math.MaxInt32)
		case "max_subscriptions":
			a.MaxSubscriptions, err = parseIntArg(d, math.MaxInt32)
		case "max_keepalive":
			a.MaxKeepalive, err = parseIntArg(d, 65535)
		case "topic_alias_maximum":
			var n int
			n, err = parseIntArg(d, 65535)
			a.TopicAliasMaximum = &n
		case "max_connection_rate":
			err = a.unmarshalConnectionRate(d)
		case "connect_timeout":
			a.ConnectTimeout, err = parseDurationArg(d)
		case "sys_interval":
			a.SysInterval, err = parseDurationArg(d)
		case "max_message_expiry":
			a.MaxMessageExpiry, err = parseDurationArg(d)
		case "shutdown_timeout":
			a.ShutdownTimeout, err = parseDurationArg(d)
		case "storage":
			a.Storage, err = unmarshalStorage(d)
		case "cluster":
			a.Cluster, err = unmarshalCluster(d)
		case "tls_names":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			a.TLSNames = append(a.TLSNames, names...)
		default:
			var ok bool
			if ok, err = a.unmarshalAuthOption(d); !ok {
				return d.Errf("unknown mqtt option '%s'", opt)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseHandlerDirective sets up the WebSocket handler. Syntax:
//
//	mqtt [<matcher>] {
//		allow_anonymous [true|false]
//		allowed_origins <patterns...>
//		insecure_any_origin
//		use_identity_as_username [true|false]
//		use_subject_as_username [true|false]
//		max_connections <n>
//		max_packet_size <size>
//		max_inflight_messages <n>
//		max_queued_messages <n>
//		max_keepalive <seconds>
//		password_file <path>
//		acl_file <path>
//		name <name>
//	}
func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens (see
// parseHandlerDirective for the syntax).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "allowed_origins":
			origins := d.RemainingArgs()
			if len(origins) == 0 {
				return d.ArgErr()
			}
			h.AllowedOrigins = append(h.AllowedOrigins, origins...)
		case "insecure_any_origin":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.InsecureAnyOrigin = true
		default:
			ok, err := h.UnmarshalDoorOption(d)
			if err != nil {
				return err
			}
			if !ok {
				return d.Errf("unknown mqtt option '%s'", d.Val())
			}
		}
	}
	return nil
}

// ParseBoolArg reads an optional true/false after the current token; a bare
// option means true.
func ParseBoolArg(d *caddyfile.Dispenser) (bool, error) {
	opt := d.Val()
	if !d.NextArg() {
		return true, nil
	}
	v, err := strconv.ParseBool(d.Val())
	if err != nil {
		return false, d.Errf("%s: want true or false, got '%s'", opt, d.Val())
	}
	if d.NextArg() {
		return false, d.ArgErr()
	}
	return v, nil
}

// parseStringArg reads the single argument of the option at the cursor.
func parseStringArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// parseIntArg reads a whole number from 0 to max: a number out of range is
// an error naming the line, never wrapped into range later.
func parseIntArg(d *caddyfile.Dispenser, max int) (int, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 0 || n > max {
		return 0, d.Errf("%s: want a whole number from 0 to %d, got '%s'", opt, max, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return n, nil
}

func parseSizeArg(d *caddyfile.Dispenser) (int, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := humanize.ParseBytes(d.Val())
	if err != nil || n > maxPacketSizeLimit {
		return 0, d.Errf("%s: want a size such as 256KiB or 1MB, at most 256MiB, got '%s'", opt, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return int(n), nil
}

func parseDurationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: want a duration such as 10s, got '%s': %v", opt, d.Val(), err)
	}
	if dur < 0 {
		return 0, d.Errf("%s: want a duration of 0 or more, got '%s'", opt, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(dur), nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
