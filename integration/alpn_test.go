package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestALPNMatrix: the MQTT/TLS door (policy `alpn mqtt x-amzn-mqtt-ca`)
// accepts clients offering mqtt, x-amzn-mqtt-ca (AWS IoT SDKs), several
// protocols among which one of those, or no ALPN at all (mosquitto, most
// embedded stacks); a client offering only h2 fails the handshake with the
// no_application_protocol alert. Each accepted handshake is followed by an
// MQTT session. tls_names gives an internal name (mqtt.internal) a
// certificate from Caddy's internal CA although no site names it.
func TestALPNMatrix(t *testing.T) {
	c := startCaddy(t, "tls_names mqtt.internal")
	for _, tc := range []struct {
		offer      []string
		negotiated string
	}{
		{[]string{"mqtt"}, "mqtt"},
		{[]string{"x-amzn-mqtt-ca"}, "x-amzn-mqtt-ca"},
		{nil, ""},
		{[]string{"h2", "mqtt"}, "mqtt"},
		{[]string{"http/1.1", "x-amzn-mqtt-ca"}, "x-amzn-mqtt-ca"},
	} {
		name := strings.Join(tc.offer, ",")
		if name == "" {
			name = "none"
		}
		t.Run(name, func(t *testing.T) {
			conn, err := handshake(c.Ports.TLS, c.TLSConfig(tc.offer...))
			if err != nil {
				t.Fatalf("handshake offering %v: %v", tc.offer, err)
			}
			if got := conn.ConnectionState().NegotiatedProtocol; got != tc.negotiated {
				t.Errorf("negotiated %q, want %q", got, tc.negotiated)
			}
			v := connectV5Over(t, conn, "tls", "alpn-"+name)
			v.Subscribe(t, "alpn/"+name, 1)
			v.Publish(t, "alpn/"+name, 1, false, []byte(name))
			if _, payload, ok := v.next(5 * time.Second); !ok || payload != name {
				t.Fatalf("no loopback message over ALPN %v: %q %v", tc.offer, payload, ok)
			}
		})
	}
	for _, offer := range [][]string{{"h2"}, {"h2", "http/1.1"}} {
		t.Run(strings.Join(offer, ",")+"-refused", func(t *testing.T) {
			_, err := handshake(c.Ports.TLS, c.TLSConfig(offer...))
			if err == nil {
				t.Fatalf("handshake offering only %v succeeded", offer)
			}
			// Go's server answers with alert 120 (no_application_protocol).
			if !strings.Contains(err.Error(), "no application protocol") {
				t.Errorf("offering %v: %v, want the no_application_protocol alert", offer, err)
			}
			t.Logf("offering %v: %v", offer, err)
		})
	}
	t.Run("tls_names internal name", func(t *testing.T) {
		// Issued asynchronously after start: retry until it verifies.
		leaf := waitLeaf(t, c, c.Ports.TLS, &tls.Config{RootCAs: c.RootPool(), ServerName: "mqtt.internal", NextProtos: []string{"mqtt"}}, 20*time.Second)
		if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "mqtt.internal" {
			t.Errorf("certificate for %v", leaf.DNSNames)
		}
		if !strings.Contains(leaf.Issuer.CommonName, "Caddy Local Authority") {
			t.Errorf("issuer %q, want Caddy's internal CA", leaf.Issuer.CommonName)
		}
	})
	t.Run("no SNI gets default_sni", func(t *testing.T) {
		roots := c.RootPool()
		conn, err := handshake(c.Ports.TLS, &tls.Config{
			InsecureSkipVerify: true, // verified below against the default name
			NextProtos:         []string{"mqtt"},
			VerifyConnection: func(cs tls.ConnectionState) error {
				inter := x509.NewCertPool()
				for _, ic := range cs.PeerCertificates[1:] {
					inter.AddCert(ic)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots, Intermediates: inter})
				if err != nil {
					return fmt.Errorf("default certificate: %w", err)
				}
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	})
}

// TestTLSNamesReload: a reload that keeps a tls_names name keeps serving the
// same certificate (the new config's tls app takes it over, nothing is
// re-issued); a reload that drops the name stops serving it.
func TestTLSNamesReload(t *testing.T) {
	c := startCaddy(t, "tls_names mqtt.internal broker.internal")
	cfg := func(name string) *tls.Config {
		return &tls.Config{RootCAs: c.RootPool(), ServerName: name, NextProtos: []string{"mqtt"}}
	}
	before := waitLeaf(t, c, c.Ports.TLS, cfg("mqtt.internal"), 20*time.Second)
	waitLeaf(t, c, c.Ports.TLS, cfg("broker.internal"), 20*time.Second)
	session := c.ConnectV5(t, "tls", "tls-names-reload")
	session.Subscribe(t, "reload/#", 1)

	c.Reload(CaddyConfig{Extra: "tls_names mqtt.internal"})
	after := waitLeaf(t, c, c.Ports.TLS, cfg("mqtt.internal"), 20*time.Second)
	if after.SerialNumber.Cmp(before.SerialNumber) != 0 {
		t.Errorf("reload re-issued mqtt.internal: serial %x -> %x", before.SerialNumber, after.SerialNumber)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := handshake(c.Ports.TLS, cfg("broker.internal"))
		if err != nil {
			t.Logf("broker.internal after it left tls_names: %v", err)
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("broker.internal still served after a reload dropped it from tls_names")
		}
		time.Sleep(200 * time.Millisecond)
	}
	session.Publish(t, "reload/after", 1, false, []byte("still here"))
	if _, payload, ok := session.next(5 * time.Second); !ok || payload != "still here" {
		t.Fatalf("session after reloads: %q %v", payload, ok)
	}
}
