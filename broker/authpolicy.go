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
	// Doors are the doors' own password files and ACLs (mosquitto's
	// per_listener_settings), by Client.AuthKey. A door's Passwords or ACL,
	// when set, replace the broker-wide one for its clients. A client whose
	// key is not here (its door's files were changed or the door removed
	// by a reload) is refused everything until it reconnects.
	Doors map[string]DoorAuth
}

// DoorAuth is one door's password file and ACL; either may be nil.
type DoorAuth struct {
	Passwords *auth.Passwords
	ACL       *auth.ACL
}

// rules returns the password file and ACL that apply to c.
func (p *AuthPolicy) rules(c *Client) (*auth.Passwords, *auth.ACL, bool) {
	if c.AuthKey == "" {
		return p.Passwords, p.ACL, true
	}
	d, ok := p.Doors[c.AuthKey]
	if !ok {
		return nil, nil, false
	}
	pw, acl := p.Passwords, p.ACL
	if d.Passwords != nil {
		pw = d.Passwords
	}
	if d.ACL != nil {
		acl = d.ACL
	}
	return pw, acl, true
}

// Authenticate implements Policy.
func (p *AuthPolicy) Authenticate(c *Client, password []byte) error {
	passwords, _, ok := p.rules(c)
	if !ok {
		return fmt.Errorf("%w: the door's password_file or acl_file is no longer configured", ErrNotAuthorized)
	}
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
	case passwords != nil:
		if password == nil {
			return fmt.Errorf("%w: no password sent", ErrNotAuthorized)
		}
		if !passwords.Check(c.Username, string(password)) {
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
	_, acl, ok := p.rules(c)
	if !ok {
		return false
	}
	switch access {
	case AccessPublish:
		return acl.CanPublish(c.Username, c.ID, topic)
	case AccessSubscribe:
		return acl.CanSubscribe(c.Username, c.ID, topic)
	case AccessRead:
		return acl.CanRead(c.Username, c.ID, topic)
	}
	return false
}

// IdentitySource implements IdentityPolicy.
func (p *AuthPolicy) IdentitySource() IdentitySource { return p.Identity }

var (
	_ Policy         = (*AuthPolicy)(nil)
	_ IdentityPolicy = (*AuthPolicy)(nil)
)
