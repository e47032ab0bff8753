package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsTemplate is the base config with the plain-HTTP site replaced by one
// that uses the `handle /path { mqtt {...} }` form, an origin allow-list, a
// door that refuses anonymous clients, and Caddy's trusted_proxies.
var wsTemplate = derive(baseCaddyfile,
	"\tlocal_certs\n", "\tlocal_certs\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n",
	`http://localhost:{{.HTTP}} {
	mqtt /mqtt
	respond "ws {{.Body}}"
}`, `http://localhost:{{.HTTP}} {
	handle /mqtt {
		mqtt {
			allowed_origins dashboard.example https://*.corp.example
		}
	}
	handle /private {
		mqtt {
			allow_anonymous false
		}
	}
	respond "ws {{.Body}}"
}`)

func wsDial(ctx context.Context, url string, header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	return wsDialFrom(ctx, "", url, header, subprotocols...)
}

// wsDialFrom dials from a given loopback source address ("" for any).
func wsDialFrom(ctx context.Context, source, url string, header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	d := &net.Dialer{}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	return websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header, Subprotocols: subprotocols, HTTPClient: client})
}

// TestWebSocketRequestsThatAreNotUpgrades go on to the next handler, so a
// page and the broker can share a path.
func TestWebSocketPlainRequestGoesToNextHandler(t *testing.T) {
	c := startCaddy(t, "")
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/mqtt", c.Ports.HTTP))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ws " {
		t.Fatalf("GET /mqtt: %d %q, want the respond handler's page", resp.StatusCode, body)
	}
}

// TestWebSocketOrigins: pages of the same host may connect; other origins
// only when allowed_origins lists them; requests without Origin (non-browser
// clients) always.
func TestWebSocketOrigins(t *testing.T) {
	c := startCaddyWith(t, wsTemplate, CaddyConfig{Ports: freePorts(t)})
	url := fmt.Sprintf("ws://localhost:%d/mqtt", c.Ports.HTTP)
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{fmt.Sprintf("http://localhost:%d", c.Ports.HTTP), true},
		{"https://dashboard.example", true},
		{"https://ops.corp.example", true},
		{"http://ops.corp.example", false},
		{"https://evil.example", false},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			ws, resp, err := wsDial(ctx, url, h, "mqtt")
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				ws.Close(websocket.StatusNormalClosure, "")
				return
			}
			if err == nil {
				ws.Close(websocket.StatusNormalClosure, "")
				t.Fatal("cross-origin upgrade accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("cross-origin: %v (response %v), want 403", err, resp)
			}
		})
	}
}

// TestWebSocketClientIP: behind a trusted proxy (127.0.0.1 here) the broker
// sees the client address from X-Forwarded-For; from an untrusted address
// (127.0.0.2) the header is ignored.
func TestWebSocketClientIP(t *testing.T) {
	c := startCaddyWith(t, wsTemplate, CaddyConfig{Ports: freePorts(t)})
	url := fmt.Sprintf("ws://localhost:%d/private", c.Ports.HTTP)
	for _, tc := range []struct{ source, id, want string }{
		{"127.0.0.1", "via-trusted-proxy", `203\.0\.113\.7`},
		{"127.0.0.2", "via-untrusted-host", `127\.0\.0\.2`},
	} {
		t.Run(tc.source, func(t *testing.T) {
			h := http.Header{}
			h.Set("X-Forwarded-For", "203.0.113.7")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ws, _, err := wsDialFrom(ctx, tc.source, url, h, "mqtt")
			if err != nil {
				t.Fatal(err)
			}
			conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
			defer conn.Close()
			// An anonymous CONNECT on the door that refuses anonymous
			// clients: the refusal is logged with the client's address.
			write(t, conn, connectPacket(5, tc.id))
			if code := readConnack(t, conn); code != 0x86 {
				t.Fatalf("CONNACK %#x, want 0x86", code)
			}
			re := regexp.MustCompile(`"msg":"mqtt connection refused".*"client":"` + tc.id + `".*"remote":"` + tc.want + `:\d+"`)
			deadline := time.Now().Add(3 * time.Second)
			for !re.MatchString(c.Log()) {
				if time.Now().After(deadline) {
					t.Fatalf("no refusal logged with remote %s:\n%s", tc.want, tail(c.Log(), 10))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
