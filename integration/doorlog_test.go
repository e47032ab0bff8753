package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestDoorsAreLogged: the log says where the doors are: each door at
// start-up with its addresses (layer4 doors were logged only at their first
// connection; mochi's own lines said "caddy:tcp"), each layer4 door's first
// connection with the local address; and a
// WebSocket upgrade refused for its Origin is logged at INFO with the origin
// and the option to change.
func TestDoorsAreLogged(t *testing.T) {
	c := startCaddy(t, "")
	// The layer4 doors are named with their addresses at start-up, before
	// any connection (the harness's readiness probes are the first ones,
	// and each is noted as "mqtt door serving").
	for _, d := range []struct {
		door string
		port int
	}{{"tcp", c.Ports.TCP}, {"tls", c.Ports.TLS}} {
		log := c.Log()
		start := strings.Index(log, fmt.Sprintf(`"msg":"mqtt door","door":%q,`, d.door))
		if start < 0 {
			t.Fatalf("no start-up line for the %s door:\n%s", d.door, tail(log, 40))
		}
		line := log[start:]
		line = line[:strings.IndexByte(line, '\n')]
		if !strings.Contains(line, fmt.Sprintf(`"listen":["127.0.0.1:%d"]`, d.port)) {
			t.Errorf("start-up line of the %s door lacks its address: %s", d.door, line)
		}
		served := strings.Index(log, fmt.Sprintf(`"msg":"mqtt door serving","door":%q`, d.door))
		connected := strings.Index(log, `"msg":"mqtt client connected"`)
		if (served >= 0 && served < start) || (connected >= 0 && connected < start) {
			t.Errorf("the %s door was logged only after a connection:\n%s", d.door, tail(log, 40))
		}
	}
	for _, door := range Doors {
		c.ConnectV3(t, door, "doorlog-"+door)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Origin", "https://evil.example")
	if ws, _, err := wsDial(ctx, fmt.Sprintf("ws://localhost:%d/mqtt", c.Ports.HTTP), h, "mqtt"); err == nil {
		ws.Close(websocket.StatusNormalClosure, "")
		t.Fatal("cross-origin upgrade accepted")
	}
	var log string
	want := []string{
		`"msg":"mqtt door","door":"ws"`,
		fmt.Sprintf(`"listen":["127.0.0.1:%d"]`, c.Ports.HTTP),
		`"msg":"mqtt door","door":"wss"`,
		fmt.Sprintf(`"listen":["127.0.0.1:%d"]`, c.Ports.HTTPS),
		fmt.Sprintf(`"msg":"mqtt door serving","door":"tcp","listen":"127.0.0.1:%d"`, c.Ports.TCP),
		fmt.Sprintf(`"msg":"mqtt door serving","door":"tls","listen":"127.0.0.1:%d"`, c.Ports.TLS),
		`"origin":"https://evil.example"`,
		"allowed_origins",
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		log = c.Log()
		missing := ""
		for _, w := range want {
			if !strings.Contains(log, w) {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %s:\n%s", missing, tail(log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(log, "caddy:tcp") {
		t.Errorf("log still names a door caddy:tcp")
	}
}
