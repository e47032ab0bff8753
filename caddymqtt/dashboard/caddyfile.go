package dashboard

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mqtt_dashboard", parseCaddyfile)
	// Before respond, reverse_proxy and file_server, which would answer the
	// page's paths themselves (a plugin can only be ordered against standard
	// directives). The mqtt directive goes there too; they never compete for
	// a request: mqtt takes only WebSocket upgrades and this handler only
	// its own files, and each passes the rest on.
	httpcaddyfile.RegisterDirectiveOrder("mqtt_dashboard", httpcaddyfile.Before, "respond")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := new(Handler)
	err := d.UnmarshalCaddyfile(h.Dispenser)
	return d, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mqtt_dashboard [<matcher>] {
//		websocket_path <path or ws(s):// URL>
//		title <text>
//		device_prefix <topic prefix>
//		subscribe <filters...>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if opt == "subscribe" {
			filters := d.RemainingArgs()
			if len(filters) == 0 {
				return d.ArgErr()
			}
			for _, f := range filters {
				if err := checkFilter(f); err != nil {
					return d.Errf("%v", err)
				}
			}
			h.Subscribe = append(h.Subscribe, filters...)
			continue
		}
		switch opt {
		case "websocket_path", "title", "device_prefix":
		default:
			return d.Errf("unknown mqtt_dashboard option '%s'", opt)
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		v := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "websocket_path":
			if err := checkWebSocketPath(v); err != nil {
				return d.Errf("%v", err)
			}
			h.WebSocketPath = v
		case "title":
			h.Title = v
		case "device_prefix":
			h.DevicePrefix = v
			if err := h.Validate(); err != nil {
				return d.Errf("%v", err)
			}
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
