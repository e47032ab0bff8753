package broker

import (
	"fmt"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

// dispatchHook is the broker's only auth hook. mochi hooks cannot be removed
// and are OR-combined, so instead of swapping hooks on reload this one hook
// asks whatever Policy is current.
type dispatchHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *dispatchHook) ID() string { return "caddy-mqtt-policy" }

func (h *dispatchHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck,
		mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnSubscribe, mqtt.OnSubscribed:
		return true
	}
	return false
}

// OnConnect runs before authentication: it refuses what no policy may
// accept and records who the client is.
func (h *dispatchHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return nil
	}
	if h.b.isClosing() {
		_ = h.b.srv.SendConnack(cl, packets.ErrServerUnavailable, false, nil)
		return packets.ErrServerShuttingDown
	}
	// "inline" is the in-process client's id; a network client using it
	// would take over the broker's own session.
	if cl.ID == mqtt.InlineClientId {
		_ = h.b.srv.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
		return packets.ErrClientIdentifierNotValid
	}
	c := &Client{
		ID:             cl.ID,
		Username:       string(cl.Properties.Username),
		Door:           cc.info.Door,
		RemoteAddr:     cl.Net.Remote,
		TLS:            cc.info.TLS,
		AllowAnonymous: cc.info.AllowAnonymous,
		AuthKey:        cc.info.AuthKey,
	}
	if err := h.certIdentity(cl, cc, c); err != nil {
		h.b.refuse(cc, RefusedTLS)
		h.b.log.Info("mqtt connection refused",
			"client", c.ID, "username", c.Username, "door", string(c.Door),
			"remote", c.RemoteAddr, "reason", err.Error())
		_ = h.b.srv.SendConnack(cl, packets.ErrBadUsernameOrPassword, false, nil)
		return packets.ErrBadUsernameOrPassword
	}
	cc.client.Store(c)
	return nil
}

// certIdentity applies use_identity_as_username / use_subject_as_username
// (the door's setting, else the policy's) to a TLS connection: the username
// becomes the verified certificate's CN or subject, replacing whatever the
// client sent, as in mosquitto. Like mosquitto, a client without a verified
// certificate is refused on such a door rather than let in on its CONNECT
// username. Plain connections carry no certificate and are left alone.
func (h *dispatchHook) certIdentity(cl *mqtt.Client, cc *clientConn, c *Client) error {
	src := cc.info.Identity
	if src == IdentityDefault {
		if ip, ok := h.b.Policy().(IdentityPolicy); ok {
			src = ip.IdentitySource()
		}
	}
	if !src.fromCert() || cc.info.TLS == nil {
		return nil
	}
	name, err := CertUsername(cc.info.TLS, src)
	if err != nil {
		return fmt.Errorf("%v: %w", src, err)
	}
	c.Username, c.CertIdentity = name, true
	// mochi and other hooks see the same username.
	cl.Properties.Username = []byte(name)
	return nil
}

// OnConnectAuthenticate asks the policy, then checks the will: mochi
// publishes a will with no ACL or topic check of its own, so like mosquitto
// the broker refuses at CONNECT a will the client could not publish itself.
func (h *dispatchHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	c := clientOf(cl)
	if c == nil {
		return cl.Net.Inline
	}
	var password []byte
	if pk.Connect.PasswordFlag {
		password = pk.Connect.Password
	}
	policy := h.b.Policy()
	start := time.Now()
	err := h.b.authenticate(policy, c, password)
	h.b.observeAuth(cl, time.Since(start))
	if err == nil {
		err = h.b.remember(cl.Net.Conn.(*clientConn), cl, policy)
	}
	if err != nil {
		if !busy(err) {
			h.refused(cl, c, RefusedAuth, err)
		} else {
			h.b.refuse(cl.Net.Conn.(*clientConn), RefusedLimit)
			h.b.logBusy(c, err)
			// Not the credentials' fault: "server busy", closed like
			// the will refusal below.
			_ = h.b.srv.SendConnack(cl, packets.ErrServerBusy, false, nil)
			cl.Stop(packets.ErrServerBusy)
		}
		return false
	}
	if pk.Connect.WillFlag {
		if err := willAllowed(policy, c, pk.Connect.WillTopic); err != nil {
			h.refused(cl, c, RefusedACL, err)
			// mochi would answer "bad username or password"; the client
			// did log in, it is the will that is not authorized. Send
			// that and close: mochi's own CONNACK then finds the
			// connection closed.
			_ = h.b.srv.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
			cl.Stop(packets.ErrNotAuthorized)
			return false
		}
	}
	return true
}

func (h *dispatchHook) refused(cl *mqtt.Client, c *Client, reason string, err error) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		h.b.logRefusedLogin(cc, c, reason, err) // connlog.go
	}
}

// willAllowed checks a will topic as a publish of the client's own.
func willAllowed(p Policy, c *Client, topic string) error {
	if err := auth.ValidTopicName(topic); err != nil {
		return fmt.Errorf("will topic: %w", err)
	}
	if strings.HasPrefix(topic, "$") || !p.Authorize(c, topic, AccessPublish) {
		return fmt.Errorf("will topic %q: %w", topic, ErrNotAuthorized)
	}
	return nil
}

// OnACLCheck is called for publishes (write), for subscription filters and
// for every delivery (read), where it also applies the queue limit of
// disconnected sessions. mochi does not say which of the last two it is:
// a filter of the SUBSCRIBE being processed (see OnSubscribe) or one with
// wildcards is a subscription; for a topic without wildcards the subscribe
// and read checks agree anyway.
func (h *dispatchHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	cc, live := cl.Net.Conn.(*clientConn)
	if !live {
		// A persistent session restored from storage that has not
		// reconnected yet: it has no connection, but messages for it
		// must still be queued if its user may read them.
		c := &Client{ID: cl.ID, Username: string(cl.Properties.Username), AuthKey: h.b.doorKeys.get(cl.ID)}
		return h.b.Policy().Authorize(c, topic, AccessRead) && !h.b.offlineQueueFull(cl, nil)
	}
	c := cc.client.Load()
	if c == nil {
		return false
	}
	switch {
	case write:
		if !h.b.Policy().Authorize(c, topic, AccessPublish) {
			h.b.logDenied(cl, topic, AccessPublish) // connlog.go
			return false
		}
		return true
	case cc.subscribing.has(topic):
		return h.b.Policy().Authorize(c, topic, AccessSubscribe) && cc.subscribing.grant(topic)
	case strings.ContainsAny(topic, "+#"):
		return h.b.Policy().Authorize(c, topic, AccessSubscribe)
	}
	if !cc.mayRead(c, topic) { // readgate.go
		return false
	}
	// A disconnected persistent session queues at most max_queued_messages
	// (a connected one is limited by its connection, see flow.go). QoS 0
	// messages are not kept for it anyway.
	if cl.Closed() {
		return !h.b.offlineQueueFull(cl, cc)
	}
	cc.awaitRoom() // see backpressure.go
	awaitWriteSlot(cl)
	return true
}

// OnSessionEstablish marks the connection as about to be known to mochi:
// from now on shutdown disconnects it through mochi's client list (see
// Broker.sweep) instead of closing it.
func (h *dispatchHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.established.Store(true)
		cc.holdID(&h.b.ids, cl.ID) // until the CONNACK is out
		cc.wmu.Lock()
		cc.awaitConnack = true
		cc.wmu.Unlock()
	}
}

// OnSessionEstablished runs once the CONNACK is sent: the client id now
// belongs to this connection.
func (h *dispatchHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	cc.releaseID()
	key := ""
	if persistentSession(cl) {
		key = cc.info.AuthKey
	}
	if err := h.b.doorKeys.set(cl.ID, key); err != nil {
		h.b.log.Error("mqtt storage: recording the client's door", "client", cl.ID, "error", err)
	}
}

// OnDisconnect runs before mochi decides whether to remove the client id
// from its list; it waits while a new connection is taking the id over, and
// holds the id until Serve returns.
func (h *dispatchHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.holdID(&h.b.ids, cl.ID)
	}
}

// encode keeps MQTT 5 packets away from MQTT 3 clients. mochi
// refuses some CONNECTs with an MQTT 5 code it has no MQTT 3 mapping for
// (0x82 for a wrong protocol name, version or reserved bit, 0x80 for an empty
// client id without clean session) and writes it unchanged into an MQTT 3
// CONNACK, where only return codes 0-5 exist. MQTT 3.1.1 requires return
// code 2 for the empty client id [MQTT-3.1.3-8].
func (h *dispatchHook) encode(cl *mqtt.Client, pk *packets.Packet) {
	if pk.FixedHeader.Type == packets.Connack && cl.Properties.ProtocolVersion < 5 && pk.ReasonCode > 5 {
		switch pk.ReasonCode {
		case packets.ErrProtocolViolation.Code, packets.ErrUnsupportedProtocolVersion.Code:
			pk.ReasonCode = packets.Err3UnsupportedProtocolVersion.Code
		case packets.ErrUnspecifiedError.Code, packets.ErrClientIdentifierNotValid.Code:
			pk.ReasonCode = packets.Err3ClientIdentifierNotValid.Code
		case packets.ErrBadUsernameOrPassword.Code, packets.ErrNotAuthorized.Code:
			pk.ReasonCode = packets.Err3NotAuthorized.Code
		default:
			pk.ReasonCode = packets.Err3ServerUnavailable.Code
		}
	}
	if pk.FixedHeader.Type == packets.Disconnect && pk.ReasonCode == packets.ErrSessionTakenOver.Code {
		// mochi's takeover writes this DISCONNECT before it stops the old
		// client, and records why only once it has closed the connection:
		// an old client that closes on reading it ended its read loop
		// with EOF as the recorded cause (metrics and logs said eof, not
		// takeover). Noted here, before it is written (MOCHI.md row 36).
		noteEnding(cl, packets.ErrSessionTakenOver)
	}
	if pk.FixedHeader.Type == packets.Disconnect && cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 has no DISCONNECT from the server (§3.14: it is the
		// client's last packet), but mochi sends one on session takeover and
		// to MQTT 3 publishers the ACL refuses. WritePacket drops a packet
		// larger than Mods.MaxSize, and those callers close the connection
		// whatever the write returns: MQTT 3 clients just see it closed.
		pk.Mods.MaxSize = 1
	}
}

func clientOf(cl *mqtt.Client) *Client {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		return cc.client.Load()
	}
	return nil
}
