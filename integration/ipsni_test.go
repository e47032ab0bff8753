package integration

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestIPSNIWithoutCertificate: a client that sends an IP address as TLS
// server name (as mosquitto clients do) for which the tls app has no
// certificate fails its handshake with a TLS alert, and the log says why in
// one line; the address never reaches IDNA conversion ("idna: disallowed
// rune U+003A" for an IPv6 address was all the log said). The base config
// has a certificate for localhost only. Both TLS doors: wss (the lookup is
// wrapped) and the layer4 tls door (a guard route in front).
func TestIPSNIWithoutCertificate(t *testing.T) {
	openssl := needTool(t, "openssl")
	c := startCaddy(t, "")
	handshake := func(port int, sni string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port),
			"-servername", sni, "-CAfile", c.RootPath(), "-verify_return_error")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("handshake with SNI %s on port %d succeeded:\n%s", sni, port, out)
		}
		return string(out)
	}
	for _, tc := range []struct {
		door, sni string
		port      int
	}{
		{"wss", "::1", c.Ports.HTTPS}, {"wss", "127.0.0.5", c.Ports.HTTPS},
		{"tls", "::1", c.Ports.TLS}, {"tls", "127.0.0.5", c.Ports.TLS},
	} {
		sni := tc.sni
		out := handshake(tc.port, sni)
		// A TLS alert, not a dropped connection.
		if !strings.Contains(out, "alert") {
			t.Errorf("%s door, SNI %s: no TLS alert:\n%s", tc.door, sni, out)
		}
		msg := `"msg":"TLS handshake refused: no certificate for the IP address the client sent as server name (SNI)","door":"` + tc.door + `"`
		name := fmt.Sprintf(`"server_name":%q`, sni)
		lines := func() (n int) {
			for _, l := range strings.Split(c.Log(), "\n") {
				if strings.Contains(l, msg) && strings.Contains(l, name) {
					n++
				}
			}
			return n
		}
		for deadline := time.Now().Add(5 * time.Second); lines() != 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s door, SNI %s: want one log line %s ... %s, log:\n%s", tc.door, sni, msg, name, tail(c.Log(), 30))
			}
		}
	}
	if strings.Contains(c.Log(), "idna") {
		t.Errorf("an IP SNI reached IDNA conversion:\n%s", tail(c.Log(), 30))
	}
	// localhost still works, by name, on both doors; no other line was
	// logged at ERROR for the refused handshakes.
	for _, port := range []int{c.Ports.HTTPS, c.Ports.TLS} {
		if out, err := exec.Command(openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port),
			"-servername", "localhost", "-CAfile", c.RootPath(), "-verify_return_error").CombinedOutput(); err != nil {
			t.Fatalf("SNI localhost on port %d: %v\n%s", port, err, out)
		}
	}
	if strings.Contains(c.Log(), `"msg":"handling connection"`) {
		t.Errorf("layer4 logged a handshake error besides the refusal:\n%s", tail(c.Log(), 30))
	}
	c.ConnectV5(t, "tls", "ipsni-after")
}
