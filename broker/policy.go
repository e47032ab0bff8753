package broker

import (
	"crypto/tls"
	"errors"
	"strings"
)

// Door names the way a client reached the broker. Each door is a mochi
// listener of its own, so logs, $SYS and shutdown can tell them apart.
type Door string

// The doors of caddy-mqtt.
const (
	DoorTCP Door = "tcp" // raw MQTT through the layer4 app
	DoorTLS Door = "tls" // MQTT over TLS through layer4 + tls
	DoorWS  Door = "ws"  // MQTT over plain WebSocket through the http app
	DoorWSS Door = "wss" // MQTT over WebSocket over HTTPS
)

// Doors lists every door, in a stable order.
var Doors = []Door{DoorTCP, DoorTLS, DoorWS, DoorWSS}

// Access is the kind of topic access a client asks for.
type Access uint8

const (
	// AccessPublish: the client publishes to a concrete topic.
	AccessPublish Access = iota + 1
	// AccessSubscribe: the client subscribes to a filter (wildcards allowed).
	AccessSubscribe
	// AccessRead: a message on a concrete topic is about to be delivered to
	// the client (including retained messages).
	AccessRead
)

func (a Access) String() string {
	switch a {
	case AccessPublish:
		return "publish"
	case AccessSubscribe:
		return "subscribe"
	case AccessRead:
		return "read"
	}
	return "unknown"
}

// Client is what a Policy knows about a client. It is built once per
// connection at CONNECT and must not be modified by a Policy.
type Client struct {
	ID         string
	Username   string
	Door       Door
	RemoteAddr string
	// TLS is the connection's TLS state, nil on plain doors.
	TLS *tls.ConnectionState
	// AllowAnonymous is the door's own allow_anonymous setting, nil when
	// the door leaves it to the policy.
	AllowAnonymous *bool
	// AuthKey names the door's own password file and ACL in the policy
	// (AuthPolicy.Doors); empty when the door has none.
	AuthKey string
	// CertIdentity is true when Username was taken from the client's
	// verified TLS certificate (use_identity_as_username or
	// use_subject_as_username); the certificate is its credential.
	CertIdentity bool
}

// ErrNotAuthorized is returned by a Policy that refuses a CONNECT.
var ErrNotAuthorized = errors.New("not authorized")

// Policy decides who may connect and what they may do. The broker holds one
// Policy behind an atomic pointer, so a config reload replaces it without
// restarting anything: a connected client is judged by the new policy from
// its next publish, subscribe or delivery on, and a policy that implements
// Rechecker disconnects the sessions it no longer admits.
type Policy interface {
	// Authenticate accepts (nil) or refuses (an error) a CONNECT. password is
	// nil when the client sent none.
	Authenticate(c *Client, password []byte) error
	// Authorize reports whether c may access topic (a filter for
	// AccessSubscribe) in the given way.
	Authorize(c *Client, topic string, access Access) bool
}

// AnonymousPolicy is the policy of a broker with no users configured: it
// accepts every client when Allow is true and refuses every client when it is
// false (mosquitto 2.x's allow_anonymous, whose default is false). A door's
// own AllowAnonymous wins over Allow. Any client may use any topic except
// publishing to $SYS.
type AnonymousPolicy struct {
	Allow bool
}

// Authenticate implements Policy.
func (p AnonymousPolicy) Authenticate(c *Client, _ []byte) error {
	allow := p.Allow
	if c.AllowAnonymous != nil {
		allow = *c.AllowAnonymous
	}
	if !allow {
		return ErrNotAuthorized
	}
	return nil
}

// NeedsPasswordCheck implements PasswordChecker: deciding costs nothing,
// so no CONNECT waits for (or is refused by) the bounds on password checks.
func (AnonymousPolicy) NeedsPasswordCheck(*Client, []byte) bool { return false }

// Authorize implements Policy.
func (AnonymousPolicy) Authorize(_ *Client, topic string, access Access) bool {
	return !(access == AccessPublish && IsSysTopic(topic))
}

// ReadsAnyTopic implements AnyTopicReader: reading is never restricted.
func (AnonymousPolicy) ReadsAnyTopic(*Client) bool { return true }

// IsSysTopic reports whether topic is in the broker's own $SYS tree, which
// clients may read but never write.
func IsSysTopic(topic string) bool {
	return topic == "$SYS" || strings.HasPrefix(topic, "$SYS/")
}
