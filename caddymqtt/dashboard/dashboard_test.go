package dashboard

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func provisioned(t *testing.T, h *Handler) *Handler {
	t.Helper()
	if err := h.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	return h
}

// serve runs one request through h; next answers 418 so a pass-through
// shows.
func serve(t *testing.T, h *Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestServesPageAndAssets(t *testing.T) {
	h := provisioned(t, &Handler{})
	page := serve(t, h, "GET", "/", nil)
	if page.Code != 200 || page.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", page.Code, page.Header().Get("Content-Type"))
	}
	body := page.Body.String()
	for _, want := range []string{`data-websocket-path="/mqtt"`, `data-device-prefix="async-mqtt/ESP8266"`, `data-subscribe="#"`, "<title>caddy-mqtt</title>", `src="app.mjs"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	csp := page.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %s", csp, want)
		}
	}
	// httptest's request is for example.com over plain HTTP.
	if !strings.Contains(csp, "connect-src 'self' ws://example.com;") {
		t.Errorf("CSP %q does not name the page's own WebSocket origin", csp)
	}
	for _, host := range []string{"evil.example; script-src *", "a b", ""} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = host
		if csp := h.contentSecurityPolicy(r); !strings.Contains(csp, "connect-src 'self'; ") {
			t.Errorf("Host %q: CSP %q", host, csp)
		}
	}
	if page.Header().Get("X-Frame-Options") != "DENY" || page.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers %v", page.Header())
	}

	for path, ct := range map[string]string{
		"/index.html":             "text/html; charset=utf-8",
		"/app.mjs":                "text/javascript; charset=utf-8",
		"/logic.mjs":              "text/javascript; charset=utf-8",
		"/style.css":              "text/css; charset=utf-8",
		"/vendor/mqtt.esm.js":     "text/javascript; charset=utf-8",
		"/vendor/uPlot.esm.js":    "text/javascript; charset=utf-8",
		"/vendor/uPlot.min.css":   "text/css; charset=utf-8",
		"/vendor/VERSIONS":        "text/plain; charset=utf-8",
		"/vendor/mqtt.LICENSE.md": "text/plain; charset=utf-8",
	} {
		w := serve(t, h, "GET", path, nil)
		if w.Code != 200 || w.Header().Get("Content-Type") != ct || w.Body.Len() == 0 {
			t.Errorf("GET %s: %d %q, %d bytes", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
	}

	// Revalidation: the ETag gives a 304.
	etag := serve(t, h, "GET", "/app.mjs", nil).Header().Get("ETag")
	if w := serve(t, h, "GET", "/app.mjs", map[string]string{"If-None-Match": etag}); w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match %s: %d, want 304", etag, w.Code)
	}
}

func TestOtherRequestsGoToNext(t *testing.T) {
	h := provisioned(t, &Handler{})
	for _, tc := range []struct{ method, path string }{
		{"GET", "/mqtt"},
		{"GET", "/nothing.js"},
		{"GET", "/vendor/"},
		{"GET", "/assets/app.mjs"},
		{"GET", "/../app.mjs/x"},
		{"POST", "/"},
		{"PUT", "/app.mjs"},
	} {
		if w := serve(t, h, tc.method, tc.path, nil); w.Code != http.StatusTeapot {
			t.Errorf("%s %s: %d, want it passed on", tc.method, tc.path, w.Code)
		}
	}
	if w := serve(t, h, "HEAD", "/", nil); w.Code != 200 {
		t.Errorf("HEAD /: %d", w.Code)
	}
}

// The options reach the page escaped: a title is text, never markup.
func TestOptionsAreEscaped(t *testing.T) {
	h := provisioned(t, &Handler{Title: `<script>alert(1)</script>`, WebSocketPath: `wss://broker.example:8443/mqtt`, DevicePrefix: `home/"x"`})
	w := serve(t, h, "GET", "/", nil)
	body := w.Body.String()
	if strings.Contains(body, "<script>alert") {
		t.Errorf("title not escaped:\n%s", body)
	}
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(body, `data-device-prefix="home/&#34;x&#34;"`) {
		t.Errorf("escaped options missing:\n%s", body)
	}
	// A WebSocket URL on another host is allowed by the page's CSP, and
	// only that one.
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self' wss://broker.example:8443;") {
		t.Errorf("CSP %q", csp)
	}
}

func TestValidate(t *testing.T) {
	for _, h := range []*Handler{
		{WebSocketPath: "mqtt"},
		{WebSocketPath: "//evil.example/mqtt"},
		{WebSocketPath: "https://x/mqtt"},
		{WebSocketPath: "wss:///mqtt"},
		{WebSocketPath: "wss://a;script-src*/mqtt"},
		{WebSocketPath: "wss://user:pw@host/mqtt"},
		{DevicePrefix: "a/+/b"},
		{DevicePrefix: "a/#"},
		{Subscribe: []string{""}},
		{Subscribe: []string{"a/#/b"}},
		{Subscribe: []string{"a/b#"}},
		{Subscribe: []string{"a/b+/c"}},
		{Subscribe: []string{"a b"}},
	} {
		if err := h.Provision(caddy.Context{}); err == nil {
			t.Errorf("%+v: accepted", *h)
		}
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	var h Handler
	d := caddyfile.NewTestDispenser(`mqtt_dashboard {
		websocket_path /broker
		title "Home devices"
		device_prefix home/esp1
		subscribe home/# +/status
		subscribe $SYS/broker/uptime
	}`)
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.WebSocketPath != "/broker" || h.Title != "Home devices" || h.DevicePrefix != "home/esp1" ||
		strings.Join(h.Subscribe, " ") != "home/# +/status $SYS/broker/uptime" {
		t.Errorf("%+v", h)
	}
	for _, bad := range []string{
		"mqtt_dashboard extra",
		"mqtt_dashboard {\n\ttitle\n}",
		"mqtt_dashboard {\n\ttitle a b\n}",
		"mqtt_dashboard {\n\twebsocket_path http://x/mqtt\n}",
		"mqtt_dashboard {\n\tdevice_prefix a/#\n}",
		"mqtt_dashboard {\n\tcolour blue\n}",
		"mqtt_dashboard {\n\tcolour\n}",
		"mqtt_dashboard {\n\tsubscribe\n}",
		"mqtt_dashboard {\n\tsubscribe a/#/b\n}",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad))
		if err == nil || !strings.Contains(err.Error(), "Testfile:") ||
			(strings.Contains(bad, "colour") && !strings.Contains(err.Error(), "unknown mqtt_dashboard option 'colour'")) {
			t.Errorf("%q: %v, want an error naming the line", bad, err)
		}
	}
}

// TestPageLogic runs the page's JavaScript unit tests (web/logic.test.mjs)
// with node's test runner, so `go test` covers them. Without node it
// skips, except on CI.
func TestPageLogic(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node not installed: .ci/run must install it")
		}
		t.Skip("node not installed")
	}
	out, err := exec.Command(node, "--test", "web/logic.test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "# fail 0") {
		t.Fatalf("node --test did not report its results:\n%s", out)
	}
	t.Logf("%s", lastLines(string(out), 8))
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
