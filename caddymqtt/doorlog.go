package caddymqtt

import (
	"net"
	"net/netip"
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

// layer4Doors collects the layer4 servers that lead to the mqtt handler,
// as the layer4 handler finds them while the layer4 app is provisioned
// (l4mqtt.Handler.Provision), for Start to log.
type layer4Doors struct {
	mu      sync.Mutex
	servers map[string]layer4Door
}

type layer4Door struct {
	listen []string
	doors  map[broker.Door]bool
}

// NoteLayer4Door records that the layer4 server name, listening on listen,
// serves door.
func (a *App) NoteLayer4Door(name string, listen []string, door broker.Door) {
	d := &a.l4Doors
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.servers == nil {
		d.servers = make(map[string]layer4Door)
	}
	s, ok := d.servers[name]
	if !ok {
		s = layer4Door{listen: slices.Clone(listen), doors: make(map[broker.Door]bool)}
		d.servers[name] = s
	}
	s.doors[door] = true
}

// log logs one line per door of each layer4 server, as logHTTPDoors does
// for the HTTP doors.
func (d *layer4Doors) log(logger *zap.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.servers))
	for name := range d.servers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := d.servers[name]
		for _, door := range []broker.Door{broker.DoorTCP, broker.DoorTLS} {
			if s.doors[door] {
				logger.Info("mqtt door",
					zap.String("door", string(door)), zap.String("server", name),
					zap.Strings("listen", s.listen))
			}
		}
	}
}

// servedDoors remembers which door and local address have been announced,
// by doorAddr.
var servedDoors sync.Map

// doorAddr is a door and a local address, a TCP one without formatting it.
type doorAddr struct {
	door  broker.Door
	tcp   netip.AddrPort
	other string
}

// keyOf is the doorAddr of door and local.
func keyOf(door broker.Door, local net.Addr) doorAddr {
	key := doorAddr{door: door}
	if tcp, ok := local.(*net.TCPAddr); ok {
		key.tcp = tcp.AddrPort()
	} else {
		key.other = local.String()
	}
	return key
}

// NoteDoor logs, once per process, the first connection a layer4 door takes
// on a local address. (A layer4 handler is not told which server it belongs
// to, so its addresses are known only once a connection arrives.) It runs
// for every connection: formatting the address each time was 4 % of the
// broker's CPU while clients connected and left at full speed.
func NoteDoor(logger *zap.Logger, door broker.Door, local net.Addr) {
	if local == nil {
		return
	}
	if _, seen := servedDoors.LoadOrStore(keyOf(door, local), true); !seen {
		logger.Info("mqtt door serving", zap.String("door", string(door)), zap.String("listen", local.String()))
	}
}
