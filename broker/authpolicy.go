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
	// by a reload) is refused everything and disconnected (Recheck).
	Doors map[string]DoorAuth
	// DoorKeys, when not nil, counts the configured doors by door group
	// (DoorGroup: "layer4" or "http") and DoorSignature (their own files
	// and allow_anonymous). See Recheck.
	DoorKeys map[string]map[string]int
}

// DoorSignature sums up what a door decides about its clients' login: its
// own password/ACL files (AuthKey) and its own allow_anonymous.
func DoorSignature(authKey string, allowAnonymous *bool) string {
	anon := "-"
	if allowAnonymous != nil {
		anon = fmt.Sprint(*allowAnonymous)
	}
	return authKey + "\x00allow_anonymous=" + anon
}

// DoorGroup is the kind of handler that serves a door: the layer4 handler
// serves tcp and tls, the HTTP handler ws and wss.
func DoorGroup(d Door) string {
	if d == DoorWS || d == DoorWSS {
		return "http"
	}
	return "layer4"
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
//
// Without a password source the username a client sends proves nothing:
// such a client (let in by allow_anonymous) gets the anonymous rules of the
// ACL, not those of the user it names, unless its username was taken from
// a verified certificate. mosquitto would apply the named user's rules.
func (p *AuthPolicy) Authorize(c *Client, topic string, access Access) bool {
	passwords, acl, ok := p.rules(c)
	if !ok {
		return false
	}
	user := c.Username
	if passwords == nil && !c.CertIdentity {
		user = ""
	}
	switch access {
	case AccessPublish:
		return acl.CanPublish(user, c.ID, topic)
	case AccessSubscribe:
		return acl.CanSubscribe(user, c.ID, topic)
	case AccessRead:
		return acl.CanRead(user, c.ID, topic)
	}
	return false
}

// ReadsAnyTopic implements AnyTopicReader: true when no ACL applies to c.
// Authorize's read check then only requires a valid topic name, which every
// topic a message is published on has: a client's publish passed
// CanPublish, and the broker's own ($SYS, wills, retained messages, other
// nodes' messages) were checked where they began.
func (p *AuthPolicy) ReadsAnyTopic(c *Client) bool {
	_, acl, ok := p.rules(c)
	return ok && acl == nil
}

// NeedsPasswordCheck implements PasswordChecker: only a client with a
// username and a password, not known by its certificate, on a door with a
// password source, costs a hash computation.
func (p *AuthPolicy) NeedsPasswordCheck(c *Client, password []byte) bool {
	passwords, _, ok := p.rules(c)
	return ok && !c.CertIdentity && c.Username != "" && passwords != nil && password != nil
}

// Credential implements Rechecker: what let c in, under this policy.
func (p *AuthPolicy) Credential(c *Client) string {
	passwords, _, _ := p.rules(c)
	switch {
	case c.CertIdentity:
		return "certificate"
	case c.Username == "" || passwords == nil:
		return "anonymous"
	}
	return "password:" + passwords.Fingerprint(c.Username)
}

// Recheck implements Rechecker. A session stays only when its door's rules
// still exist, what let it in is unchanged (same password file entry, or
// still anonymous, or its certificate) and anonymous access is still
// allowed for an anonymous one.
//
// Door handlers are new objects after a reload and have no identity that
// survives it, so a session cannot tell whether its own door changed its
// files or allow_anonymous (DoorSignature): when the number of doors of its
// group with its door's signature changed, or none is left, it is
// disconnected. (Two doors of a group that swap their settings go
// unnoticed.)
func (p *AuthPolicy) Recheck(prev Policy, c *Client, credential string) error {
	if _, _, ok := p.rules(c); !ok {
		return fmt.Errorf("%w: the door's password_file or acl_file is no longer configured", ErrNotAuthorized)
	}
	if p.DoorKeys != nil {
		group, sig := DoorGroup(c.Door), DoorSignature(c.AuthKey, c.AllowAnonymous)
		n := p.DoorKeys[group][sig]
		if n == 0 {
			return fmt.Errorf("%w: no door has the session's password_file, acl_file and allow_anonymous any more", ErrNotAuthorized)
		}
		if pp, ok := prev.(*AuthPolicy); ok && pp.DoorKeys != nil && pp.DoorKeys[group][sig] != n {
			return fmt.Errorf("%w: %s doors changed their own password_file, acl_file or allow_anonymous", ErrNotAuthorized, group)
		}
	}
	now := p.Credential(c)
	switch {
	case now != credential:
		return fmt.Errorf("%w: the user's password entry changed or was removed", ErrNotAuthorized)
	case now == "anonymous" && !p.anonymous(c):
		return fmt.Errorf("%w: anonymous access is off (allow_anonymous)", ErrNotAuthorized)
	}
	return nil
}

func (p *AuthPolicy) anonymous(c *Client) bool {
	if c.AllowAnonymous != nil {
		return *c.AllowAnonymous
	}
	return p.AllowAnonymous
}

// IdentitySource implements IdentityPolicy.
func (p *AuthPolicy) IdentitySource() IdentitySource { return p.Identity }

var (
	_ Policy          = (*AuthPolicy)(nil)
	_ IdentityPolicy  = (*AuthPolicy)(nil)
	_ PasswordChecker = (*AuthPolicy)(nil)
	_ Rechecker       = (*AuthPolicy)(nil)
)
