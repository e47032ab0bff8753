package broker

import (
	"bytes"
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
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
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnSessionEstablish,
	}, []byte{b})
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
	}
	if err := h.certIdentity(cl, cc, c); err != nil {
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

func (h *dispatchHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	c := clientOf(cl)
	if c == nil {
		return cl.Net.Inline
	}
	var password []byte
	if pk.Connect.PasswordFlag {
		password = pk.Connect.Password
	}
	if err := h.b.Policy().Authenticate(c, password); err != nil {
		h.b.log.Info("mqtt connection refused",
			"client", c.ID, "username", c.Username, "door", string(c.Door),
			"remote", c.RemoteAddr, "reason", err.Error())
		return false
	}
	return true
}

// OnACLCheck is called for publishes (write), for subscription filters and
// for every delivery (read). mochi does not say which of the last two it is;
// a filter with wildcards can only be a subscription, and for a filter without
// wildcards the subscribe and read checks agree.
func (h *dispatchHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	c := clientOf(cl)
	if c == nil {
		return cl.Net.Inline
	}
	access := AccessRead
	switch {
	case write:
		access = AccessPublish
	case strings.ContainsAny(topic, "+#"):
		access = AccessSubscribe
	}
	return h.b.Policy().Authorize(c, topic, access)
}

// OnSessionEstablish marks the connection as known to mochi, which from now
// on disconnects it itself at shutdown.
func (h *dispatchHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.established.Store(true)
	}
}

func clientOf(cl *mqtt.Client) *Client {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		return cc.client.Load()
	}
	return nil
}
