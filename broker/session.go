package broker

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Who may resume a session.
//
// mochi hands the session of a client id (its subscriptions and the QoS 1/2
// messages queued for it) to any new connection with that id and Clean Start
// 0, whoever connects, and resends the queue at once. sessionHook narrows
// that to what the spec and the security model allow:
//   - a session belongs to the identity that made it: the username (verified
//     by password or certificate, or none for anonymous clients) and the
//     door's own password file and ACL, if it has them. Another identity
//     never resumes it: the old session is discarded, as for Clean Start 1,
//     before anything is resent, and the client gets Session Present 0;
//   - a session that ends with its connection (MQTT 5 session expiry 0, MQTT
//     3 clean session) is never resumed, even by a reconnect that arrives
//     before mochi has removed it [MQTT-3.1.2-23]; mochi resumed it when the
//     new CONNECT came before the old connection's end was processed;
//   - what a resumed session holds is checked against the client's read
//     access now: a message queued under an ACL that a reload has since
//     narrowed is not delivered.
//
// The decision is made in OnSessionEstablish, while the previous session is
// still mochi's, and applied when mochi encodes the CONNACK: by then mochi
// has handed the session over and not yet resent anything.
type sessionHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *sessionHook) ID() string { return "caddy-mqtt-session" }

func (h *sessionHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish
}

// sessionState is what a connection's session carries over from the
// previous connection when it is resumed: the client's packet identifiers
// (packetids.go) and which queued messages were written and not
// acknowledged (flow.go); and what OnSessionEstablish decided, until the
// CONNACK.
type sessionState struct {
	ids    *inboundIDs
	sent   *sentIDs
	resume atomic.Uint32 // a sessionStart
}

// sessionStart is what OnSessionEstablish decided for a connection.
type sessionStart uint8

const (
	sessionNew     sessionStart = iota // nothing to resume
	sessionResumed                     // mochi resumes it; check what it holds
	sessionRefused                     // mochi would resume it; discard it
)

func (h *sessionHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	existing, found := h.b.srv.Clients.Get(cl.ID)
	// mochi resumes unless Clean Start, or the old session was an MQTT 3
	// clean one (inheritClientSession).
	if !found || pk.Connect.Clean || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) {
		cc.resume.Store(uint32(sessionNew))
		return
	}
	if !persistentSession(existing) || !h.sameOwner(existing, cc) {
		cc.resume.Store(uint32(sessionRefused))
		return
	}
	cc.resume.Store(uint32(sessionResumed))
	if old, ok := existing.Net.Conn.(*clientConn); ok {
		// The session's identifiers and what was sent of its queue
		// carry over to this connection.
		cc.ids = old.ids
		cc.sent = old.sent
	}
}

// sameOwner reports whether the new connection has the identity that made
// the existing session. A session restored from storage has no connection:
// its username and door come from the store.
func (h *sessionHook) sameOwner(existing *mqtt.Client, cc *clientConn) bool {
	c := cc.client.Load()
	if c == nil {
		return false
	}
	var key string
	if old, ok := existing.Net.Conn.(*clientConn); ok {
		oc := old.client.Load()
		if oc == nil {
			return false
		}
		key = oc.AuthKey
	} else {
		key = h.b.doorKeys.get(existing.ID)
	}
	return string(existing.Properties.Username) == c.Username && key == c.AuthKey
}

// encode applies the decision to the CONNACK.
func (h *sessionHook) encode(cl *mqtt.Client, pk *packets.Packet) {
	if pk.ReasonCode != packets.CodeSuccess.Code {
		return
	}
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	switch sessionStart(cc.resume.Swap(uint32(sessionNew))) {
	case sessionRefused:
		// What mochi handed over belongs to someone else, or to a
		// session that has ended: drop it, storage included, as mochi
		// does for Clean Start.
		h.b.srv.UnsubscribeClient(cl)
		cl.ClearInflights()
		cc.ids, cc.sent = new(inboundIDs), new(sentIDs)
		pk.SessionPresent = false // [MQTT-3.2.2-2]
	case sessionResumed:
		h.dropUnreadable(cl, cc)
	}
	cc.m.sessionPresent.Store(pk.SessionPresent) // for the connect log line
}

// dropUnreadable removes the queued messages the client may no longer read.
func (h *sessionHook) dropUnreadable(cl *mqtt.Client, cc *clientConn) {
	c := cc.client.Load()
	if c == nil {
		return
	}
	policy := h.b.Policy()
	for _, m := range cl.State.Inflight.GetAll(false) {
		if m.FixedHeader.Type != packets.Publish || policy.Authorize(c, m.TopicName, AccessRead) {
			continue
		}
		if cl.State.Inflight.Delete(m.PacketID) {
			atomic.AddInt64(&h.b.srv.Info.Inflight, -1)
			if h.b.store != nil && h.b.store.keep(cl) {
				h.b.store.OnQosDropped(cl, m)
			}
		}
	}
}
