package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// One line per connect and per disconnect at INFO, so an operator can follow
// a client; refused logins and ACL denials at WARN through a sampler, so a
// client (or a botnet) retrying bad passwords cannot fill the disk. Neither
// passwords nor payloads are ever logged. The counters (metrics.go) count
// every event, sampled or not.

func (b *Broker) logConnected(cl *mqtt.Client, cc *clientConn) {
	if !b.log.Enabled(context.Background(), slog.LevelInfo) {
		return // the address's string and the attributes cost a connection 2 %
	}
	b.log.Info("mqtt client connected",
		"client", cl.ID,
		"username", string(cl.Properties.Username),
		"door", cc.m.door.name,
		"remote", cc.RemoteAddr().String(),
		"protocol", int(cl.Properties.ProtocolVersion),
		"session_present", cc.m.sessionPresent.Load(),
		"clean_start", cl.Properties.Clean,
	)
}

// logDisconnected logs the end of a session. An ordinary EOF is a reason,
// not an error; only unexpected errors are attached.
func (b *Broker) logDisconnected(cl *mqtt.Client, cc *clientConn, reason string, err error) {
	if !b.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	attrs := []any{
		"client", cl.ID,
		"username", string(cl.Properties.Username),
		"door", cc.m.door.name,
		"remote", cc.RemoteAddr().String(),
		"protocol", int(cl.Properties.ProtocolVersion),
		"session_present", cc.m.sessionPresent.Load(),
		"reason", reason,
	}
	if since := cc.m.since.Load(); since > 0 {
		attrs = append(attrs, "duration", time.Since(time.Unix(0, since)).Round(time.Millisecond).String())
	}
	if err != nil && (reason == DisconnectError || reason == DisconnectProtocol || reason == DisconnectWrite) {
		attrs = append(attrs, "error", err.Error())
	}
	b.log.Info("mqtt client disconnected", attrs...)
}

// logRefusedLogin counts a CONNECT refused by the policy (reason
// RefusedAuth, or RefusedACL for its will) and logs it at WARN through the
// sampler.
func (b *Broker) logRefusedLogin(cc *clientConn, c *Client, reason string, err error) {
	if errors.Is(err, ErrBusy) {
		reason = RefusedLimit
	}
	b.refuse(cc, reason)
	if !b.warnSampler.allow("refused", time.Now()) {
		return
	}
	b.log.Warn("mqtt connection refused",
		"client", c.ID, "username", c.Username, "door", cc.m.door.name,
		"remote", c.RemoteAddr, "reason", reason, "error", err.Error())
}

// logDenied logs a publish or subscribe the ACL refused, at WARN through
// the sampler.
func (b *Broker) logDenied(cl *mqtt.Client, topic string, access Access) {
	if !b.warnSampler.allow("denied", time.Now()) {
		return
	}
	door := cl.Net.Listener
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		door = cc.m.door.name
	}
	b.log.Warn("mqtt "+access.String()+" denied by acl",
		"client", cl.ID, "username", string(cl.Properties.Username), "door", door,
		"remote", cl.Net.Remote, "topic", topic)
}

// sampler lets the first `first` events of a kind through in each second,
// then one in `thereafter`, as zap's sampler does.
type sampler struct {
	first, thereafter uint64
	mu                sync.Mutex
	second            map[string]int64
	n                 map[string]uint64
}

func newSampler() *sampler { return &sampler{first: 10, thereafter: 100} }

func (s *sampler) allow(kind string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.second == nil {
		s.second, s.n = make(map[string]int64), make(map[string]uint64)
	}
	sec := now.Unix()
	if s.second[kind] != sec {
		s.second[kind], s.n[kind] = sec, 0
	}
	s.n[kind]++
	n := s.n[kind]
	return n <= s.first || (n-s.first)%s.thereafter == 0
}
