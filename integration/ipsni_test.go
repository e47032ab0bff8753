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
// has a certificate for localhost only.
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
	for _, sni := range []string{"::1", "127.0.0.5"} {
		out := handshake(c.Ports.HTTPS, sni)
		// A TLS alert, not a dropped connection.
		if !strings.Contains(out, "alert") {
			t.Errorf("wss door, SNI %s: no TLS alert:\n%s", sni, out)
		}
		msg := `"msg":"TLS handshake refused: no certificate for the IP address the client sent as server name (SNI)","door":"wss"`
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
				t.Fatalf("wss door, SNI %s: want one log line %s ... %s, log:\n%s", sni, msg, name, tail(c.Log(), 30))
			}
		}
	}
	if strings.Contains(c.Log(), "idna") {
		t.Errorf("an IP SNI reached IDNA conversion:\n%s", tail(c.Log(), 30))
	}
	// localhost still works, by name.
	if out, err := exec.Command(openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", c.Ports.HTTPS),
		"-servername", "localhost", "-CAfile", c.RootPath(), "-verify_return_error").CombinedOutput(); err != nil {
		t.Fatalf("SNI localhost: %v\n%s", err, out)
	}
}
