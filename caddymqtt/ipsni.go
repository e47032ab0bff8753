package caddymqtt

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// An IP address as TLS server name (SNI). RFC 6066 forbids it, but
// mosquitto clients (and others) send the host they were given, so
// `mosquitto_pub -h ::1` sends "::1". When the tls app's cache has a
// certificate for that address, certmagic serves it. When it has none,
// certmagic converts the name with IDNA before looking further, which
// refuses the ':' of an IPv6 address: the handshake failed with
// "idna: disallowed rune U+003A", which tells the user nothing about the
// missing certificate (an IPv4 address failed with "no certificate
// available").
//
// guardIPSNI wraps the certificate lookup of the TLS connection policies of
// every HTTP server that serves the mqtt handler (the wss door): a
// handshake with an IP address as server name that finds no certificate
// fails with an error that says so, and is logged once at INFO (Caddy logs
// TLS handshake errors of HTTP servers at DEBUG only). Handshakes that
// succeed, and those with a host name, are not touched.
//
// The layer4 tls door cannot be wrapped so: its connection policies are
// held by caddy-l4's tls handler, which no other module can reach. It gets
// a guard route instead (layer4/ipsni.go).
func (a *App) guardIPSNI(ctx caddy.Context) {
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
		for _, pol := range srv.TLSConnPolicies {
			if pol == nil || pol.TLSConfig == nil || pol.TLSConfig.GetCertificate == nil {
				continue
			}
			// Written before the http app takes connections when it starts
			// after the mqtt app; otherwise within the same start-up, before
			// the config is announced as running.
			pol.TLSConfig.GetCertificate = ipSNIGuard(pol.TLSConfig.GetCertificate, a.logger, broker.DoorWSS, name)
		}
	}
}

// ipSNIGuard wraps a GetCertificate: a failed lookup for an IP address
// server name gets a clear error and one INFO line.
func ipSNIGuard(get func(*tls.ClientHelloInfo) (*tls.Certificate, error), logger *zap.Logger, door broker.Door, server string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := get(hello)
		if err == nil {
			return cert, nil
		}
		name := strings.TrimSpace(hello.ServerName)
		if net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")) == nil {
			return cert, err
		}
		remote := ""
		if hello.Conn != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		if logger != nil {
			logger.Info("TLS handshake refused: no certificate for the IP address the client sent as server name (SNI)",
				zap.String("door", string(door)), zap.String("server", server),
				zap.String("server_name", name), zap.String("remote", remote),
				zap.String("fix", "add the address to the mqtt app's tls_names, or connect by a name the certificate covers"))
		}
		return nil, fmt.Errorf("no certificate for the IP address %q sent as TLS server name", name)
	}
}
