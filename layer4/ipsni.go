package l4mqtt

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"
)

// An IP address as TLS server name (SNI) on the layer4 tls door (see
// caddymqtt/ipsni.go for the wss door). mosquitto clients send the host
// they were given, so `mosquitto_pub -h ::1` sends "::1". Without a
// certificate for it, certmagic converts the name with IDNA, which refuses
// the ':' of an IPv6 address, and caddy-l4 logged the handshake as failed
// with "idna: disallowed rune U+003A".
//
// caddy-l4's tls handler keeps its connection policies to itself, so their
// certificate lookup cannot be wrapped. Instead, while the layer4 app is
// provisioned (the layer4 mqtt handler sees it, as for the door log in
// doors.go), a server whose routes all lead to the mqtt handler, one of them
// through a tls handler, gets a guard route in front: it matches a
// ClientHello whose server name is an IP address for which that tls
// handler's connection policies find no certificate (the same lookup, run
// once more for IP server names only), logs one INFO line saying so, and
// answers with a TLS alert (unrecognized_name). Every other connection goes
// on to the server's own routes, untouched.

func init() {
	caddy.RegisterModule(new(ipSNIMatcher))
	caddy.RegisterModule(new(refuseHandler))
}

// guardTLSDoors inserts the guard route into the servers of l4 that need
// one. It runs in the mqtt handler's Provision, before the servers' routes
// are compiled (doors.go says why every mqtt route's JSON is still there).
func guardTLSDoors(ctx caddy.Context, l4 *layer4.App, logger *zap.Logger) {
	for name, srv := range l4.Servers {
		if len(srv.Routes) == 0 {
			continue
		}
		if isGuard(srv.Routes[0]) {
			continue // inserted by an earlier mqtt handler of this config
		}
		policies, ok := tlsDoorPolicies(srv.Routes)
		if !ok {
			continue
		}
		match, _ := json.Marshal(map[string]any{"mqtt_ip_sni_refused": map[string]any{
			"connection_policies": policies, "server": name,
		}})
		matchRaw := []caddy.ModuleMap{{"tls": match}}
		handleRaw := []json.RawMessage{json.RawMessage(refuseJSON)}
		guard := &layer4.Route{MatcherSetsRaw: matchRaw, HandlersRaw: handleRaw}
		// Provisioned here for the server being provisioned now (its
		// routes are compiled after this handler's Provision returns);
		// the JSON is put back for a server not provisioned yet, which
		// provisions the route once more (an equivalent matcher; the
		// handler twice, harmless: it ends the connection).
		if err := guard.Provision(ctx); err != nil {
			logger.Warn("mqtt: no IP SNI guard for a layer4 tls door", zap.String("server", name), zap.Error(err))
			continue
		}
		guard.MatcherSetsRaw, guard.HandlersRaw = matchRaw, handleRaw
		srv.Routes = append(layer4.RouteList{guard}, srv.Routes...)
	}
}

// refuseJSON is the guard route's handler.
const refuseJSON = `{"handler":"mqtt_tls_refuse"}`

// isGuard reports whether r is a guard route (its JSON is kept).
func isGuard(r *layer4.Route) bool {
	return r != nil && len(r.HandlersRaw) == 1 && string(r.HandlersRaw[0]) == refuseJSON
}

// tlsDoorPolicies returns the connection policies of the tls handler of a
// server's routes when every route leads to the mqtt handler and exactly
// one of them through a tls handler; ok is false otherwise (the guard would
// risk refusing a connection meant for another route).
func tlsDoorPolicies(routes layer4.RouteList) (json.RawMessage, bool) {
	var policies json.RawMessage
	tlsRoutes := 0
	for _, r := range routes {
		if r == nil || len(r.HandlersRaw) == 0 {
			return nil, false
		}
		var tlsRaw json.RawMessage
		mqtt := false
		for _, raw := range r.HandlersRaw {
			var h struct {
				Handler  string          `json:"handler"`
				Policies json.RawMessage `json:"connection_policies"`
			}
			if json.Unmarshal(raw, &h) != nil {
				return nil, false
			}
			switch h.Handler {
			case "tls":
				if tlsRaw != nil {
					return nil, false
				}
				tlsRaw = h.Policies
				if tlsRaw == nil {
					tlsRaw = json.RawMessage("[]")
				}
			case "mqtt":
				mqtt = true
			}
		}
		if !mqtt {
			return nil, false
		}
		if tlsRaw != nil {
			tlsRoutes++
			policies = tlsRaw
		}
	}
	return policies, tlsRoutes == 1
}

// ipSNIMatcher matches a ClientHello with an IP address as server name for
// which its connection policies (a copy of the tls door's) find no
// certificate.
type ipSNIMatcher struct {
	ConnectionPolicies caddytls.ConnectionPolicies `json:"connection_policies,omitempty"`
	Server             string                      `json:"server,omitempty"`

	cfg    *tls.Config
	logger *zap.Logger
}

func (*ipSNIMatcher) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.handshake_match.mqtt_ip_sni_refused",
		New: func() caddy.Module { return new(ipSNIMatcher) },
	}
}

func (m *ipSNIMatcher) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	if len(m.ConnectionPolicies) == 0 {
		// As caddy-l4's tls handler does.
		m.ConnectionPolicies = append(m.ConnectionPolicies, new(caddytls.ConnectionPolicy))
	}
	if err := m.ConnectionPolicies.Provision(ctx); err != nil {
		return err
	}
	m.cfg = m.ConnectionPolicies.TLSConfig(ctx)
	return nil
}

func (m *ipSNIMatcher) Match(hello *tls.ClientHelloInfo) bool {
	name := strings.TrimSpace(hello.ServerName)
	if net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")) == nil {
		return false
	}
	cfg, err := m.cfg.GetConfigForClient(hello)
	if err != nil || cfg == nil || cfg.GetCertificate == nil {
		return false // the handshake fails on its own, without IDNA
	}
	if _, err := cfg.GetCertificate(hello); err == nil {
		return false
	}
	remote := ""
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr().String()
	}
	m.logger.Info("TLS handshake refused: no certificate for the IP address the client sent as server name (SNI)",
		zap.String("door", "tls"), zap.String("server", m.Server),
		zap.String("server_name", name), zap.String("remote", remote),
		zap.String("fix", "add the address to the mqtt app's tls_names, or connect by a name the certificate covers"))
	return true
}

// refuseHandler answers a ClientHello with a fatal unrecognized_name alert
// [RFC 6066 §3] and ends the connection.
type refuseHandler struct{}

func (*refuseHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.mqtt_tls_refuse",
		New: func() caddy.Module { return new(refuseHandler) },
	}
}

func (*refuseHandler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	// Alert record: type 21, TLS 1.2 record version, length 2, fatal (2),
	// unrecognized_name (112).
	_, _ = cx.Write([]byte{21, 3, 3, 0, 2, 2, 112})
	return nil
}

var (
	_ caddytls.ConnectionMatcher = (*ipSNIMatcher)(nil)
	_ caddy.Provisioner          = (*ipSNIMatcher)(nil)
	_ layer4.NextHandler         = (*refuseHandler)(nil)
)
