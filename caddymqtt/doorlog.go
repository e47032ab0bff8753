package caddymqtt

import (
	"net"
	"slices"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// Saying where the doors are. mochi's own start-up lines name its listeners
// "caddy:tcp" and the like, which tells a user nothing; these name each door
// with the addresses it answers on.

// logHTTPDoors logs, when a config starts, every HTTP server whose routes
// lead to the mqtt handler: its door (ws, or wss when the server has TLS),
// listen addresses, host names and paths.
func (a *App) logHTTPDoors(ctx caddy.Context) {
	app, err := ctx.AppIfConfigured("http")
	if err != nil || app == nil {
		return
	}
	httpApp, ok := app.(*caddyhttp.App)
	if !ok {
		return
	}
	for name, srv := range httpApp.Servers {
		var hosts, paths []string
		if !findMQTTHandler(srv.Routes, &hosts, &paths) {
			continue
		}
		door := broker.DoorWS
		if len(srv.TLSConnPolicies) > 0 {
			door = broker.DoorWSS
		}
		slices.Sort(hosts)
		a.logger.Info("mqtt door",
			zap.String("door", string(door)), zap.String("server", name),
			zap.Strings("listen", srv.Listen), zap.Strings("hosts", slices.Compact(hosts)),
			zap.Strings("paths", slices.Compact(paths)))
	}
}

// findMQTTHandler reports whether routes (or their subroutes) contain the
// mqtt handler, collecting the host and path matchers on the way to it.
func findMQTTHandler(routes caddyhttp.RouteList, hosts, paths *[]string) bool {
	found := false
	for _, r := range routes {
		var routeHosts, routePaths []string
		for _, set := range r.MatcherSets {
			for _, m := range set {
				switch m := m.(type) {
				case caddyhttp.MatchHost:
					routeHosts = append(routeHosts, m...)
				case *caddyhttp.MatchHost:
					routeHosts = append(routeHosts, (*m)...)
				case caddyhttp.MatchPath:
					routePaths = append(routePaths, m...)
				case *caddyhttp.MatchPath:
					routePaths = append(routePaths, (*m)...)
				}
			}
		}
		here := false
		for _, h := range r.Handlers {
			switch h := h.(type) {
			case *Handler:
				here = true
			case *caddyhttp.Subroute:
				var subHosts, subPaths []string
				if findMQTTHandler(h.Routes, &subHosts, &subPaths) {
					here = true
					routeHosts = append(routeHosts, subHosts...)
					routePaths = append(routePaths, subPaths...)
				}
			}
		}
		if here {
			found = true
			*hosts = append(*hosts, routeHosts...)
			*paths = append(*paths, routePaths...)
		}
	}
	return found
}

// servedDoors remembers which door and local address have been announced.
var servedDoors sync.Map

// NoteDoor logs, once per process, the first connection a layer4 door takes
// on a local address. (A layer4 handler is not told which server it belongs
// to, so its addresses are known only once a connection arrives.)
func NoteDoor(logger *zap.Logger, door broker.Door, local net.Addr) {
	if local == nil {
		return
	}
	key := string(door) + " " + local.String()
	if _, seen := servedDoors.LoadOrStore(key, true); !seen {
		logger.Info("mqtt door serving", zap.String("door", string(door)), zap.String("listen", local.String()))
	}
}
