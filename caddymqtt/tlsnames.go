package caddymqtt

import (
	"fmt"
	"net"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// The layer4 tls handler only reads certificates from the tls app's cache; it
// manages none. A name that only a layer4 route serves (mqtt.example.com on
// 8883, say) would therefore never get a certificate and every handshake for
// it would fail with "no certificate available". tls_names closes that gap:
// the mqtt app asks the tls app to manage those names exactly as the http app
// does for its site addresses.
//
//   - Provision: names that cannot get a public certificate (localhost,
//     *.localhost, *.local, *.internal, *.home.arpa, private and loopback IPs,
//     and any IP when no automation policy is configured) and that no
//     automation policy names get an automation policy with the internal
//     issuer, as Caddy's automatic HTTPS gives such site names. Nothing is
//     obtained here, so `caddy validate` issues no certificate.
//   - Start: (*caddytls.TLS).Manage(names). Each name goes to the first
//     automation policy that covers it (explicit subjects, then the catch-all
//     policy that global options such as acme_ca, email, acme_dns, key_type
//     and cert_issuer produce), so public names use ACME unless configured
//     otherwise. Manage records the names as managed by this config's tls
//     app, so a reload keeps the certificates in the cache and the old
//     config's tls app does not evict them; a reload that drops a name lets
//     Caddy stop maintaining it.
//
// Caddy 2.11's global `tls_automate_names` (the tls app's `automate`
// certificate loader) reaches the same end at adapt time. tls_names lives in
// the mqtt app so that the names the broker serves are listed with the broker,
// and so it works the same from JSON; both can be used together.

// normalizeTLSNames lower-cases and checks the configured names.
func normalizeTLSNames(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		name := strings.ToLower(strings.TrimSpace(n))
		if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
			name = name[1 : len(name)-1]
		}
		switch {
		case name == "":
			return nil, fmt.Errorf("tls_names: empty name")
		case strings.Contains(name, "://") || strings.Contains(name, "/"):
			return nil, fmt.Errorf("tls_names: %q: want a host name, not a URL", n)
		case net.ParseIP(name) == nil && strings.Contains(name, ":"):
			return nil, fmt.Errorf("tls_names: %q: want a host name without a port", n)
		case !certmagic.SubjectQualifiesForCert(name):
			return nil, fmt.Errorf("tls_names: %q cannot have a certificate", n)
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out, nil
}

// needsInternalIssuer reports whether Caddy's automatic HTTPS would give the
// name to its internal CA: names that no public CA issues for, and IP
// addresses when no automation policy is configured (the default issuers do
// not issue for IPs).
func needsInternalIssuer(name string, tlsApp *caddytls.TLS) bool {
	if !certmagic.SubjectQualifiesForPublicCert(name) {
		return true
	}
	return certmagic.SubjectIsIP(name) && (tlsApp.Automation == nil || len(tlsApp.Automation.Policies) == 0)
}

// policyNames reports whether an automation policy with subjects covers name
// (a catch-all policy does not count: auto-HTTPS overrides it for internal
// names too).
func policyNames(tlsApp *caddytls.TLS, name string) bool {
	if tlsApp.Automation == nil {
		return false
	}
	for _, ap := range tlsApp.Automation.Policies {
		for _, subj := range ap.SubjectsRaw {
			if strings.EqualFold(subj, name) || certmagic.MatchWildcard(name, strings.ToLower(subj)) {
				return true
			}
		}
	}
	return false
}

// provisionTLSNames checks the names and gives internal names an internal
// issuer policy. It obtains nothing.
func (a *App) provisionTLSNames(ctx caddy.Context) error {
	if len(a.TLSNames) == 0 {
		return nil
	}
	names, err := normalizeTLSNames(a.TLSNames)
	if err != nil {
		return err
	}
	a.TLSNames = names
	tlsAppIface, err := ctx.App("tls")
	if err != nil {
		return fmt.Errorf("tls_names: getting tls app: %v", err)
	}
	a.tlsApp = tlsAppIface.(*caddytls.TLS)

	var internal []string
	for _, name := range names {
		if needsInternalIssuer(name, a.tlsApp) && !policyNames(a.tlsApp, name) {
			internal = append(internal, name)
		}
	}
	if len(internal) == 0 {
		return nil
	}
	iss := new(caddytls.InternalIssuer)
	if err := iss.Provision(ctx); err != nil {
		return fmt.Errorf("tls_names: provisioning internal issuer: %v", err)
	}
	ap := &caddytls.AutomationPolicy{SubjectsRaw: internal, Issuers: []certmagic.Issuer{iss}}
	if err := a.tlsApp.AddAutomationPolicy(ap); err != nil {
		return fmt.Errorf("tls_names: adding internal automation policy for %v: %v", internal, err)
	}
	return a.tlsApp.Validate()
}

// manageTLSNames starts certificate management for the names. Like the http
// app's automatic HTTPS it runs in Start: obtaining is asynchronous, and
// handshakes for a name succeed as soon as its certificate is in the cache.
func (a *App) manageTLSNames() error {
	if a.tlsApp == nil || len(a.TLSNames) == 0 {
		return nil
	}
	set := make(map[string]struct{}, len(a.TLSNames))
	for _, n := range a.TLSNames {
		set[n] = struct{}{}
	}
	if a.logger != nil {
		a.logger.Info("managing certificates for MQTT TLS names", zap.Strings("names", a.TLSNames))
	}
	if err := a.tlsApp.Manage(set); err != nil {
		return fmt.Errorf("tls_names: %v", err)
	}
	return nil
}
