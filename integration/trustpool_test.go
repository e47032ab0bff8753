package integration

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// TestReloadChangesTrustPool: a reload that replaces the device CA keeps the
// sessions already verified, refuses new handshakes with certificates of the
// old CA and accepts the new CA's.
func TestReloadChangesTrustPool(t *testing.T) {
	needTool(t, "openssl")
	dir := t.TempDir()
	oldCA, _, oldCert, oldKey := opensslDeviceCA(t, dir, "old-", "device-old")
	newCA, _, newCert, newKey := opensslDeviceCA(t, dir, "new-", "device-new")
	extra := "allow_anonymous\n\t\tuse_identity_as_username"
	c := startCaddyWith(t, strings.ReplaceAll(identityCaddyfile, "@CA@", oldCA), CaddyConfig{Ports: freePorts(t), Extra: extra})

	withCert := func(cert, key string) func(*pahov3.ClientOptions) {
		return func(o *pahov3.ClientOptions) {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			cfg := c.TLSConfig()
			cfg.Certificates = []tls.Certificate{pair}
			o.SetTLSConfig(cfg)
		}
	}
	dev := c.ConnectV3(t, "tls", "device-old", withCert(oldCert, oldKey))
	dev.Subscribe(t, "pool/#", 1)

	reloadWith(t, c, strings.ReplaceAll(identityCaddyfile, "@CA@", newCA), CaddyConfig{Extra: extra})

	// The verified session is still there and working.
	dev.Publish(t, "pool/after-reload", 1, false, []byte("still here"))
	select {
	case m := <-dev.Msgs:
		if string(m.Payload()) != "still here" {
			t.Fatalf("got %q", m.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old-CA session stopped working after the reload")
	}
	if dev.Lost.Load() || !dev.IsConnected() {
		t.Fatal("the reload dropped the verified session")
	}

	// New handshakes use the new pool.
	pair, _ := tls.LoadX509KeyPair(oldCert, oldKey)
	cfg := c.TLSConfig("mqtt")
	cfg.Certificates = []tls.Certificate{pair}
	if conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TLS), cfg); err == nil {
		// TLS 1.3 reports the server's refusal of a client certificate on
		// the first read.
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("old-CA certificate after the reload: %v, want a certificate error", err)
		}
		conn.Close()
	}
	c.ConnectV3(t, "tls", "device-new", withCert(newCert, newKey)).Publish(t, "pool/new", 1, false, []byte("new CA"))
}
