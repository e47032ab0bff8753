package integration

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRenewalKeepsSessions: with ACME certificates that live one minute, an
// MQTT session on the TLS door and one on WSS keep exchanging messages while
// Caddy renews both certificates (real ACME orders) and until the
// certificate each session started with has expired; new handshakes
// afterwards get certificates with other serial numbers. Nothing reloads,
// nothing reconnects.
func TestRenewalKeepsSessions(t *testing.T) {
	const lifetime = time.Minute
	// renew_interval: how often Caddy checks; renewal_window_ratio 0.5: renew
	// once half the lifetime is left (pebble's ARI window may pick earlier).
	c, pb := startACMECaddy(t, lifetime, "renew_interval 2s\n\trenewal_window_ratio 0.5")
	roots := pb.Roots(t)
	tlsCfg := func() *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "mqtt.example.test", NextProtos: []string{"mqtt"}}
	}
	wssCfg := func() *tls.Config { return &tls.Config{RootCAs: roots, ServerName: "broker.example.test"} }
	waitLeaf(t, c, c.Ports.TLS, tlsCfg(), 60*time.Second)
	waitLeaf(t, c, c.Ports.HTTPS, wssCfg(), 60*time.Second)

	tconn, err := handshake(c.Ports.TLS, tlsCfg())
	if err != nil {
		t.Fatal(err)
	}
	tlsLeaf := tconn.ConnectionState().PeerCertificates[0]
	overTLS := connectV5Over(t, tconn, "tls", "renew-tls")
	overTLS.Subscribe(t, "renew/tls", 1)
	wconn, wssLeaf := dialWSSName(t, "broker.example.test", c.Ports.HTTPS, roots)
	overWSS := connectV5Over(t, wconn, "wss", "renew-wss")
	overWSS.Subscribe(t, "renew/wss", 1)
	t.Logf("sessions started with tls serial %x (expires %s) and wss serial %x (expires %s)",
		tlsLeaf.SerialNumber, tlsLeaf.NotAfter.Format(time.TimeOnly), wssLeaf.SerialNumber, wssLeaf.NotAfter.Format(time.TimeOnly))

	start := time.Now()
	expired := tlsLeaf.NotAfter
	if wssLeaf.NotAfter.After(expired) {
		expired = wssLeaf.NotAfter
	}
	var renewedTLS, renewedWSS bool
	for i := 0; ; i++ {
		exchange(t, overTLS, overWSS, "renew/tls", "renew/wss", fmt.Sprintf("message %d", i))
		if !renewedTLS {
			if conn, err := handshake(c.Ports.TLS, tlsCfg()); err == nil {
				leaf := conn.ConnectionState().PeerCertificates[0]
				conn.Close()
				if leaf.SerialNumber.Cmp(tlsLeaf.SerialNumber) != 0 {
					renewedTLS = true
					t.Logf("after %v a new TLS handshake gets serial %x", time.Since(start).Round(time.Second), leaf.SerialNumber)
				}
			} else {
				t.Errorf("new TLS handshake: %v", err)
			}
		}
		if !renewedWSS {
			if conn, err := handshake(c.Ports.HTTPS, wssCfg()); err == nil {
				leaf := conn.ConnectionState().PeerCertificates[0]
				conn.Close()
				if leaf.SerialNumber.Cmp(wssLeaf.SerialNumber) != 0 {
					renewedWSS = true
					t.Logf("after %v a new WSS handshake gets serial %x", time.Since(start).Round(time.Second), leaf.SerialNumber)
				}
			} else {
				t.Errorf("new WSS handshake: %v", err)
			}
		}
		if renewedTLS && renewedWSS && time.Now().After(expired.Add(2*time.Second)) {
			break
		}
		if time.Since(start) > 2*lifetime+30*time.Second {
			t.Fatalf("after %v: tls renewed %v, wss renewed %v", time.Since(start), renewedTLS, renewedWSS)
		}
		time.Sleep(time.Second)
	}
	if overTLS.Lost.Load() || overWSS.Lost.Load() {
		t.Fatal("a session was dropped during renewal")
	}
	// The sessions are still the ones that started on the old certificates.
	if got := tconn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(tlsLeaf.SerialNumber) != 0 {
		t.Fatalf("TLS session's certificate changed to %x", got)
	}
	exchange(t, overTLS, overWSS, "renew/tls", "renew/wss", "after the first certificates expired")
	renewals := strings.Count(c.Log(), "certificate renewed successfully")
	if renewals < 2 {
		t.Errorf("%d renewals in the log, want at least 2", renewals)
	}
	t.Logf("%d renewals in %v, sessions kept", renewals, time.Since(start).Round(time.Second))
}
