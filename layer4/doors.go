package l4mqtt

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
	"github.com/caddy-mqtt/caddy-mqtt/caddymqtt"
)

// Saying where the layer4 doors are, at start-up. A layer4 handler is not
// told which server it belongs to, and once a server is provisioned its
// routes keep their handlers unexported (HandlersRaw is cleared). But the
// handler is provisioned while the layer4 app is (the app is in the
// context's module lineage), and at that moment every route not yet
// provisioned, its own included, still has its JSON: the first mqtt
// handler provisioned sees all of them (a route provisioned before it held
// no mqtt handler, or that one would have come first), later ones see the
// rest. Each records the servers whose routes lead to an mqtt handler, and
// whether a tls handler comes before it (the tls door) or not (tcp), for
// the mqtt app's Start to log (caddymqtt/doorlog.go).
func noteDoors(ctx caddy.Context, app *caddymqtt.App) {
	var l4 *layer4.App
	for _, m := range ctx.Modules() {
		if a, ok := m.(*layer4.App); ok {
			l4 = a
		}
	}
	if l4 == nil {
		return
	}
	guardTLSDoors(ctx, l4, ctx.Logger()) // ipsni.go; before the door scan, which skips the guard's JSON
	for name, srv := range l4.Servers {
		doors := map[broker.Door]bool{}
		for _, r := range srv.Routes {
			scanHandlers(r.HandlersRaw, false, doors)
		}
		for door := range doors {
			app.NoteLayer4Door(name, srv.Listen, door)
		}
	}
}

// rawHandler is what scanHandlers reads of a layer4 handler's JSON: its
// name, and the routes of a subroute.
type rawHandler struct {
	Handler string `json:"handler"`
	Routes  []struct {
		Handle []json.RawMessage `json:"handle"`
	} `json:"routes"`
}

// scanHandlers notes the doors of the mqtt handlers in a chain of handlers
// (tls: a tls handler ran before the chain).
func scanHandlers(handlers []json.RawMessage, tls bool, doors map[broker.Door]bool) {
	for _, raw := range handlers {
		var h rawHandler
		if json.Unmarshal(raw, &h) != nil {
			continue
		}
		switch h.Handler {
		case "tls":
			tls = true
		case "mqtt":
			if tls {
				doors[broker.DoorTLS] = true
			} else {
				doors[broker.DoorTCP] = true
			}
		case "subroute":
			for _, r := range h.Routes {
				scanHandlers(r.Handle, tls, doors)
			}
		}
	}
}
