package caddymqtt

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Subprotocols are the WebSocket subprotocols the handler speaks, in order of
// preference: "mqtt" (MQTT 3.1.1 and 5), "mqttv3.1" (what MQTT.js and paho
// offer for protocol level 3) and "mqttv3.1.1", which some older clients send.
var Subprotocols = []string{"mqtt", "mqttv3.1", "mqttv3.1.1"}

// Handler is the WebSocket door to the broker: it upgrades MQTT-over-WebSocket
// requests and hands the connection to the mqtt app's broker. Requests that
// are not WebSocket upgrades go to the next handler, so one route can serve a
// page and the broker at the same path.
type Handler struct {
	// Origins (host patterns, as in path.Match, or scheme://host patterns)
	// allowed besides the request's own host. Browsers send Origin; by
	// default only pages of the same host may connect, which keeps other
	// sites from using a visitor's browser against the broker. "*" allows
	// every origin, except for requests that carry a TLS client
	// certificate (see InsecureAnyOrigin); it cannot be combined with
	// use_identity_as_username or use_subject_as_username.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// Lets "*" in allowed_origins also admit cross-site requests with a TLS
	// client certificate. A browser sends its user's client certificate to
	// any page's WebSocket, so with it any web page the device owner
	// visits can act as that device (cross-site WebSocket hijacking).
	InsecureAnyOrigin bool `json:"insecure_any_origin,omitempty"`

	DoorOptions

	app       *App
	logger    *zap.Logger
	originLog originLog
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mqtt",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the mqtt app (loading it with defaults if the config has
// none).
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	var err error
	h.app, err = AppFrom(ctx)
	if err != nil {
		return err
	}
	if err := h.DoorOptions.ProvisionAuth(h.app, broker.DoorGroup(broker.DoorWS)); err != nil {
		return err
	}
	if h.anyOrigin() && !h.InsecureAnyOrigin && h.certIdentity() {
		return errors.New(`allowed_origins "*" with usernames from client certificates lets any web page ` +
			`the certificate's owner visits connect as that user (cross-site WebSocket hijacking): ` +
			`list the allowed origins, or add insecure_any_origin if that is really wanted`)
	}
	return nil
}

func (h *Handler) anyOrigin() bool {
	for _, p := range h.AllowedOrigins {
		if p == "*" {
			return true
		}
	}
	return false
}

// certIdentity reports whether usernames come from client certificates on
// this door (its own setting, else the app's).
func (h *Handler) certIdentity() bool {
	switch DoorIdentity(h.UseIdentityAsUsername, h.UseSubjectAsUsername) {
	case broker.IdentityCN, broker.IdentitySubject:
		return true
	case broker.IdentityNone:
		return false
	}
	return h.app.UseIdentityAsUsername || h.app.UseSubjectAsUsername
}

// Validate checks the origin patterns.
func (h *Handler) Validate() error {
	for _, p := range h.AllowedOrigins {
		if strings.TrimSpace(p) == "" {
			return errors.New("allowed_origins: empty pattern")
		}
	}
	return h.DoorOptions.Validate()
}

// ServeHTTP upgrades MQTT-over-WebSocket requests and serves the MQTT session
// for as long as it lasts; other requests go to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !isWebSocketUpgrade(r) {
		return next.ServeHTTP(w, r)
	}
	if offered := r.Header.Values("Sec-WebSocket-Protocol"); len(offered) > 0 && !offersMQTT(offered) {
		// A browser that offered subprotocols fails the handshake when none
		// is echoed; say why instead of upgrading to something it rejects.
		return caddyhttp.Error(http.StatusBadRequest,
			errors.New("websocket subprotocol must be one of mqtt, mqttv3.1, mqttv3.1.1"))
	}
	b, err := h.app.Broker()
	if err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}

	// The session outlives the server's read/write timeouts.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})

	opts := &websocket.AcceptOptions{Subprotocols: Subprotocols}
	// A client certificate is a credential the browser adds by itself, to
	// any page's request: "*" does not extend to those requests unless
	// insecure_any_origin says so.
	withCert := r.TLS != nil && len(r.TLS.PeerCertificates) > 0
	if h.anyOrigin() && (!withCert || h.InsecureAnyOrigin) {
		opts.InsecureSkipVerify = true
	} else {
		for _, p := range h.AllowedOrigins {
			if p != "*" { // path.Match would let "*" match any host
				opts.OriginPatterns = append(opts.OriginPatterns, p)
			}
		}
	}
	ws, err := websocket.Accept(w, r, opts)
	if err != nil {
		// Accept has written the error response (bad handshake, origin).
		if origin := r.Header.Get("Origin"); origin != "" && strings.Contains(err.Error(), "Origin") {
			// A page on another origin is the usual first-hour surprise:
			// say which origin and what to change, once a minute per origin.
			if h.originLog.allow(origin, time.Now()) {
				h.logger.Info("mqtt websocket upgrade refused: origin not allowed; add it to the mqtt handler's allowed_origins",
					zap.String("origin", origin), zap.String("host", r.Host), zap.String("remote", r.RemoteAddr))
			}
			return nil
		}
		h.logger.Debug("websocket upgrade refused", zap.String("remote", r.RemoteAddr), zap.Error(err))
		return nil
	}

	door := broker.DoorWS
	if r.TLS != nil {
		door = broker.DoorWSS
	}
	// The connection must not end with the request: its context is tied to
	// the broker's session, which Serve ends by closing the conn.
	conn := &wsConn{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary)}
	info := h.ConnInfo(door)
	info.RemoteAddr, info.TLS = clientAddr(r), r.TLS
	remote := r.RemoteAddr
	// The session gets a goroutine of its own and the handler returns. The
	// connection is hijacked, so net/http and Caddy are done with it; the
	// request's goroutine would otherwise keep Caddy's whole middleware
	// chain under the broker's read loop, a stack that stays at 32 KB for
	// every idle WebSocket connection.
	go func() {
		err := b.Serve(conn, info)
		_ = conn.Close()
		if err != nil {
			h.logger.Debug("mqtt websocket session ended", zap.String("remote", remote), zap.Error(err))
		}
	}()
	return nil
}

func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func offersMQTT(values []string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			for _, sp := range Subprotocols {
				if strings.EqualFold(t, sp) {
					return true
				}
			}
		}
	}
	return false
}

// clientAddr is the client's address as Caddy sees it: the real client IP
// when the request came through one of the server's trusted_proxies, with the
// port of the connection.
func clientAddr(r *http.Request) net.Addr {
	ipStr, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	ip := net.ParseIP(ipStr)
	if ip == nil {
		return nil
	}
	_, portStr, _ := net.SplitHostPort(r.RemoteAddr)
	port, _ := strconv.Atoi(portStr)
	return &net.TCPAddr{IP: ip, Port: port}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// originLog limits the log lines about refused origins to one a minute per
// origin. Origins are chosen by whoever sends the request, so the memory is
// bounded: past 1024 origins it starts afresh.
type originLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *originLog) allow(origin string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[origin]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if l.last == nil || len(l.last) >= 1024 {
		l.last = make(map[string]time.Time)
	}
	l.last[origin] = now
	return true
}
