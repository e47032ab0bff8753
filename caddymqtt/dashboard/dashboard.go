// Package dashboard is http.handlers.mqtt_dashboard: a web page, embedded in
// the binary, that shows and controls devices through the broker over MQTT
// over WebSocket (MQTT.js) on the same site. The page logs in with the
// broker's own users and is bound by their ACLs; the handler itself grants
// nothing.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// assets are the page's files. index.html is a template (title, WebSocket
// URL, device topics); everything else is served as is. vendor/ holds the
// browser bundles of MQTT.js and uPlot, copied from the npm lockfile by
// web/vendor.sh.
//
//go:embed assets
var assets embed.FS

// Handler serves the dashboard page and its files. Requests for other paths
// go to the next handler, so the page can sit in front of a file_server or a
// reverse_proxy on the same site.
type Handler struct {
	// Where the page opens its MQTT connection: a path on the page's own
	// site (default "/mqtt", where the mqtt handler usually is; the page
	// uses wss:// when it was loaded over https://) or a full ws:// or
	// wss:// URL. A URL on another host must also be allowed by that
	// door's allowed_origins.
	WebSocketPath string `json:"websocket_path,omitempty"`

	// The page's title. Default "caddy-mqtt".
	Title string `json:"title,omitempty"`

	// The topic prefix of the demo device (firmware/README.md): the page
	// shows a device card for <prefix>/status, <prefix>/led/state and
	// <prefix>/led/set, and for the firmware's <prefix>_Pub and
	// <prefix>_tic. Default "async-mqtt/ESP8266".
	DevicePrefix string `json:"device_prefix,omitempty"`

	// The topic filters the page subscribes to after logging in, besides
	// $SYS/# for the broker panel. Default ["#"], every topic. A filter
	// the user's ACL refuses is reported on the page; when all of them
	// are refused, the page falls back to the device's topics (the first
	// level of device_prefix, e.g. "async-mqtt/#").
	Subscribe []string `json:"subscribe,omitempty"`

	files map[string]file
}

// file is one asset ready to serve.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mqtt_dashboard",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills in defaults and renders the page once.
func (h *Handler) Provision(caddy.Context) error {
	if h.WebSocketPath == "" {
		h.WebSocketPath = "/mqtt"
	}
	if h.Title == "" {
		h.Title = "caddy-mqtt"
	}
	if h.DevicePrefix == "" {
		h.DevicePrefix = "async-mqtt/ESP8266"
	}
	if len(h.Subscribe) == 0 {
		h.Subscribe = []string{"#"}
	}
	if err := h.Validate(); err != nil {
		return err
	}
	var err error
	h.files, err = h.render()
	return err
}

// Validate checks the options.
func (h *Handler) Validate() error {
	if h.WebSocketPath != "" {
		if err := checkWebSocketPath(h.WebSocketPath); err != nil {
			return err
		}
	}
	if strings.ContainsAny(h.DevicePrefix, "+#\x00") {
		return fmt.Errorf("device_prefix %q: a topic prefix holds no wildcard (+, #) and no NUL", h.DevicePrefix)
	}
	for _, f := range h.Subscribe {
		if err := checkFilter(f); err != nil {
			return err
		}
	}
	return nil
}

// checkWebSocketPath accepts an absolute path or a ws/wss URL.
func checkWebSocketPath(p string) error {
	if strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "//") {
		return nil
	}
	u, err := url.Parse(p)
	// The host goes into the page's CSP header: a plain host[:port] only.
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || !plainHost(u.Host) || u.User != nil {
		return fmt.Errorf("websocket_path %q: want a path such as /mqtt or a ws:// or wss:// URL", p)
	}
	return nil
}

// checkFilter checks a topic filter's shape [MQTT-4.7.1-1] [MQTT-4.7.1-2]
// [MQTT-4.7.3-1]: not empty, no NUL, "#" only as the whole last level and
// "+" only as a whole level. Filters are joined with spaces for the page,
// so they hold no space either.
func checkFilter(f string) error {
	bad := f == "" || strings.ContainsAny(f, "\x00 ")
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if (strings.Contains(l, "#") && (l != "#" || i != len(levels)-1)) || (strings.Contains(l, "+") && l != "+") {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("subscribe %q: not a valid topic filter (or it holds a space)", f)
	}
	return nil
}

// pageConfig is what index.html is rendered with.
type pageConfig struct {
	Title, WebSocketPath, DevicePrefix, Subscribe string
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".md":   "text/plain; charset=utf-8",
	"":      "text/plain; charset=utf-8", // LICENSE, VERSIONS
}

// render reads every asset, renders index.html, and computes the ETags.
func (h *Handler) render() (map[string]file, error) {
	files := make(map[string]file)
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "assets")
		ext := path.Ext(name)
		if strings.HasSuffix(name, "LICENSE") || strings.HasSuffix(name, "VERSIONS") {
			ext = ""
		}
		ct, ok := contentTypes[ext]
		if !ok {
			return fmt.Errorf("asset %s: no content type for %q", p, ext)
		}
		if name == "/index.html" {
			tmpl, err := template.New("index").Parse(string(body))
			if err != nil {
				return err
			}
			var b bytes.Buffer
			if err := tmpl.Execute(&b, pageConfig{h.Title, h.WebSocketPath, h.DevicePrefix, strings.Join(h.Subscribe, " ")}); err != nil {
				return err
			}
			body = b.Bytes()
			name = "/"
		}
		sum := sha256.Sum256(body)
		files[name] = file{body: body, contentType: ct,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, ok := files["/"]; !ok {
		return nil, errors.New("dashboard: index.html missing from the embedded assets")
	}
	return files, nil
}

// contentSecurityPolicy keeps the page to its own files: no inline script,
// no third-party origin, and no framing (a framed page could be clicked
// into switching devices). connect-src 'self' covers ws:// and wss:// to
// the page's own host in CSP level 3; browsers that predate it need the
// WebSocket origin spelled out, which is the request's own host (only
// when it is a plain host[:port], so nothing else enters the header).
func (h *Handler) contentSecurityPolicy(r *http.Request) string {
	connect := "'self'"
	if u, err := url.Parse(h.WebSocketPath); err == nil && u.Host != "" {
		connect += " " + u.Scheme + "://" + u.Host
	} else if plainHost(r.Host) {
		scheme := "ws://"
		if r.TLS != nil {
			scheme = "wss://"
		}
		connect += " " + scheme + r.Host
	}
	// uPlot sizes its canvas and legend through style attributes. MQTT.js
	// runs its keepalive timer in a Worker made from a blob: URL (timers in
	// a background tab's page are throttled to once a minute, which would
	// miss the keepalive); only the page's own scripts can make one.
	return "default-src 'none'; script-src 'self'; worker-src blob:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
		"connect-src " + connect + "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// plainHost reports whether host is a non-empty host name or address with
// an optional port, made of nothing but [A-Za-z0-9.:[]-].
func plainHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".:[]-", c)) {
			return false
		}
	}
	return true
}

// ServeHTTP serves the page at "/" (and "/index.html") and its files by
// name; anything else goes to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	name := r.URL.Path
	if name == "/index.html" {
		name = "/"
	}
	f, ok := h.files[name]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return next.ServeHTTP(w, r)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("ETag", f.etag)
	// Revalidate every time (a 304 is cheap): a new Caddy binary brings a
	// new page at once, never next to an old cached module.
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if name == "/" {
		hdr.Set("Content-Security-Policy", h.contentSecurityPolicy(r))
		hdr.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
