package broker

import (
	"fmt"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

// AuthPolicy is the mosquitto 2.x built-in security model: an optional
// password file, an optional acl_file, allow_anonymous, and usernames taken
// from verified client certificates.
//
// Authentication, checked against mosquitto 2.0.11:
//   - A client authenticated by a verified certificate (Client.CertIdentity)
//     needs no password, as with mosquitto's use_identity_as_username.
//   - A client without a username is accepted only when anonymous access
//     is allowed (the door's allow_anonymous, else AllowAnonymous).
//   - With a password file, a client with a username must send that user's
//     password; an unknown user or a missing password is refused even when
//     anonymous access is allowed.
//   - Without a password file, a client with a username is accepted only
//     when anonymous access is allowed: mosquitto 2.0 with
//     allow_anonymous false and no password_file refuses everyone.
//
// An empty username counts as none (mosquitto would treat "" as a
// username); the ACL does the same.
//
// Authorization: a nil ACL allows everything except publishing to $SYS and
// $share topics; otherwise the ACL decides (see auth.ACL).
//
// The fields must not be changed once the policy is in use; a reload builds
// a new AuthPolicy and swaps it in (Broker.SetPolicy).
type AuthPolicy struct {
	Passwords      *auth.Passwords
	ACL            *auth.ACL
	AllowAnonymous bool
	// Identity is the broker-wide use_identity_as_username /
	// use_subject_as_username; a door's ConnInfo.Identity wins.
	Identity IdentitySource
}

// Authenticate implements Policy.
func (p *AuthPolicy) Authenticate(c *Client, password []byte) error {
	if c.CertIdentity {
		return nil
	}
	anon := p.AllowAnonymous
	if c.AllowAnonymous != nil {
		anon = *c.AllowAnonymous
	}
	switch {
	case c.Username == "":
		if !anon {
			return fmt.Errorf("%w: anonymous access is off (allow_anonymous)", ErrNotAuthorized)
		}
		return nil
	case p.Passwords != nil:
		if password == nil {
			return fmt.Errorf("%w: no password sent", ErrNotAuthorized)
		}
		if !p.Passwords.Check(c.Username, string(password)) {
			return fmt.Errorf("%w: unknown user or wrong password", ErrNotAuthorized)
		}
		return nil
	case !anon:
		return fmt.Errorf("%w: no users are configured and anonymous access is off", ErrNotAuthorized)
	}
	return nil
}

// Authorize implements Policy.
func (p *AuthPolicy) Authorize(c *Client, topic string, access Access) bool {
	switch access {
	case AccessPublish:
		return p.ACL.CanPublish(c.Username, c.ID, topic)
	case AccessSubscribe:
		return p.ACL.CanSubscribe(c.Username, c.ID, topic)
	case AccessRead:
		return p.ACL.CanRead(c.Username, c.ID, topic)
	}
	return false
}

// IdentitySource implements IdentityPolicy.
func (p *AuthPolicy) IdentitySource() IdentitySource { return p.Identity }

var (
	_ Policy         = (*AuthPolicy)(nil)
	_ IdentityPolicy = (*AuthPolicy)(nil)
)
