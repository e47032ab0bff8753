package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// mochiLogHandler filters what mochi logs, which clients can trigger at
// will: it drops packet dumps ("pk"), which carry payloads and, for a second
// CONNECT, the password; it logs a client's protocol errors and short
// keepalives at DEBUG; and it logs a client's dropped-message warnings at
// most once per interval per client, so a slow subscriber cannot flood the
// log with one line per message.
type mochiLogHandler struct {
	slog.Handler
	limit *logLimiter
}

// demoted are mochi's messages about a client's own mistakes.
var demoted = map[string]bool{
	"error processing packet":        true,
	mqtt.ErrMinimumKeepalive.Error(): true,
	// ... and its start-up lines, which name the doors "caddy:tcp" and the
	// like; the mqtt app logs where the doors are instead.
	"attached listener": true,
	"added hook":        true,
	"stopping hook":     true,
}

// throttled are mochi's warnings that repeat for every message a client
// cannot take.
var throttled = map[string]bool{
	"client store quota reached": true,
	"packet ids exhausted":       true,
}

func newMochiLogger(l *slog.Logger) *slog.Logger {
	return slog.New(mochiLogHandler{Handler: l.Handler(), limit: &logLimiter{every: 10 * time.Second}})
}

func (h mochiLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if demoted[r.Message] && r.Level > slog.LevelDebug {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	client := ""
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "pk", "packet":
		case "client":
			client = a.Value.String()
			out.AddAttrs(a)
		default:
			out.AddAttrs(a)
		}
		return true
	})
	if throttled[r.Message] && !h.limit.allow(r.Message+"\x00"+client, r.Time) {
		return nil
	}
	return h.Handler.Handle(ctx, out)
}

func (h mochiLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return mochiLogHandler{Handler: h.Handler.WithAttrs(attrs), limit: h.limit}
}

func (h mochiLogHandler) WithGroup(name string) slog.Handler {
	return mochiLogHandler{Handler: h.Handler.WithGroup(name), limit: h.limit}
}

// logLimiter lets a key through at most once per interval.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
}

func (l *logLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < l.every {
		return false
	}
	// Forget old keys now and then, so the map stays small.
	if len(l.last) > 1024 {
		for k, t := range l.last {
			if now.Sub(t) >= l.every {
				delete(l.last, k)
			}
		}
	}
	l.last[key] = now
	return true
}
