package caddymqtt

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

// AuthConfig holds the mqtt app's users, ACL and certificate identity
// options, named as in mosquitto.conf. Files are read in Provision, so
// `caddy validate` reports their errors (as file:line) and `caddy reload`
// picks up their changes; the new policy replaces the old one, and only the
// sessions it no longer admits are dropped.
type AuthConfig struct {
	// A mosquitto password file ("user:hash" lines; $7$, $6$, $argon2id$
	// and bcrypt hashes), e.g. made with mosquitto_passwd or
	// `caddy mqtt passwd`.
	PasswordFile string `json:"password_file,omitempty"`

	// Users with hashed passwords, in addition to those of password_file.
	Users []User `json:"users,omitempty"`

	// A mosquitto acl_file. Once an ACL is configured, whatever it does not
	// allow is denied.
	ACLFile string `json:"acl_file,omitempty"`

	// ACL rules in acl_file syntax, one line per element ("user alice",
	// "topic read sensors/#", "pattern write devices/%u/#"). Cannot be
	// combined with acl_file, since topic lines belong to the last "user"
	// line before them and the two could not be joined unambiguously.
	ACL []string `json:"acl,omitempty"`

	// On TLS doors, the username is the CN of the client's verified
	// certificate, which needs no password; a client without one is refused.
	// A door's own setting wins.
	UseIdentityAsUsername bool `json:"use_identity_as_username,omitempty"`

	// Like use_identity_as_username, with the certificate's whole subject in
	// RFC 2253 form (e.g. "CN=dev1,O=Example,C=DE") as the username.
	UseSubjectAsUsername bool `json:"use_subject_as_username,omitempty"`
}

// User is an inline user. Plain-text passwords are refused.
type User struct {
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash"`
}

// BuildPolicy reads the files and returns the policy they describe.
func (c *AuthConfig) BuildPolicy(allowAnonymous bool) (*broker.AuthPolicy, error) {
	if c.UseIdentityAsUsername && c.UseSubjectAsUsername {
		return nil, errors.New("use_identity_as_username and use_subject_as_username exclude each other")
	}
	p := &broker.AuthPolicy{
		AllowAnonymous: allowAnonymous,
		Identity:       identitySource(c.UseIdentityAsUsername, c.UseSubjectAsUsername),
	}
	if c.PasswordFile != "" {
		var err error
		p.Passwords, err = readFile(c.PasswordFile, auth.ParsePasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
	}
	for _, u := range c.Users {
		if p.Passwords == nil {
			p.Passwords = auth.NewPasswords()
		}
		if err := checkHash(u.Username, u.PasswordHash); err != nil {
			return nil, err
		}
		if err := p.Passwords.Add(u.Username, u.PasswordHash); err != nil {
			return nil, fmt.Errorf("mqtt user %q: %w", u.Username, err)
		}
	}
	switch {
	case c.ACLFile != "" && len(c.ACL) > 0:
		return nil, errors.New("use either acl_file or inline acl rules, not both")
	case c.ACLFile != "":
		var err error
		p.ACL, err = readFile(c.ACLFile, auth.ParseACLFile)
		if err != nil {
			return nil, fmt.Errorf("acl_file: %w", err)
		}
	case len(c.ACL) > 0:
		var err error
		p.ACL, err = auth.ParseACLFile(strings.NewReader(strings.Join(c.ACL, "\n")), "inline acl")
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

// readFile parses the file at path; errors name the path (and line).
func readFile[T any](path string, parse func(r io.Reader, name string) (T, error)) (T, error) {
	f, err := os.Open(path)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return parse(f, path)
}

// checkHash explains the most likely mistake, a plain-text password.
func checkHash(user, hash string) error {
	if err := auth.ValidUsername(user); err != nil {
		return fmt.Errorf("mqtt user: %w", err)
	}
	if err := auth.ValidateHash(hash); err != nil {
		return fmt.Errorf("mqtt user %q: want a password hash ($7$, $6$, $argon2id$ or bcrypt): %w", user, err)
	}
	return nil
}

// identitySource maps the two mosquitto booleans to the broker's setting.
func identitySource(identity, subject bool) broker.IdentitySource {
	switch {
	case identity:
		return broker.IdentityCN
	case subject:
		return broker.IdentitySubject
	}
	return broker.IdentityNone
}

// DoorIdentity is a door's own use_identity_as_username /
// use_subject_as_username (nil: not set) as the broker's per-door setting.
func DoorIdentity(identity, subject *bool) broker.IdentitySource {
	switch {
	case identity != nil && *identity:
		return broker.IdentityCN
	case subject != nil && *subject:
		return broker.IdentitySubject
	case identity != nil || subject != nil:
		return broker.IdentityNone
	}
	return broker.IdentityDefault
}

// unmarshalAuthOption parses one auth option of the global mqtt block. It
// reports false for options that are not auth options. Syntax:
//
//	password_file <path>
//	acl_file <path>
//	user <name> <hash>
//	acl {
//		user <name>
//		topic [read|write|readwrite|deny] <filter>
//		pattern [read|write|readwrite|deny] <filter>
//	}
//	use_identity_as_username [true|false]
//	use_subject_as_username [true|false]
//
// In the acl block a filter that is just "#" must be quoted ("#"), since a
// token starting with # is a Caddyfile comment; "a/#" needs no quotes.
func (c *AuthConfig) unmarshalAuthOption(d *caddyfile.Dispenser) (bool, error) {
	var err error
	switch opt := d.Val(); opt {
	case "password_file":
		c.PasswordFile, err = parseStringArg(d)
	case "acl_file":
		c.ACLFile, err = parseStringArg(d)
	case "user":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return true, d.Errf("user: want 'user <name> <password hash>', got %d arguments", len(args))
		}
		if err := checkHash(args[0], args[1]); err != nil {
			return true, d.Err(err.Error())
		}
		c.Users = append(c.Users, User{Username: args[0], PasswordHash: args[1]})
	case "acl":
		if d.NextArg() {
			return true, d.Errf("acl takes a block of rules; for a file use acl_file")
		}
		n := len(c.ACL)
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			keyword, args := d.Val(), d.RemainingArgs()
			if (keyword == "topic" || keyword == "pattern") && len(args) == 1 {
				if _, err := auth.ParseAccess(args[0]); err == nil {
					// acl_file syntax would read "topic read" as the
					// filter "read"; here it is almost surely a filter "#"
					// that the Caddyfile took for a comment.
					return true, d.Errf(`acl: %s %s: missing topic filter (a bare # starts a Caddyfile comment; write "#")`, keyword, args[0])
				}
			}
			line := strings.Join(append([]string{keyword}, args...), " ")
			// Each line on its own is valid acl_file text, so checking it
			// here puts the Caddyfile's file:line on the error.
			if _, err := auth.ParseACLFile(strings.NewReader(line), "acl"); err != nil {
				return true, d.Errf("acl: %s", strings.TrimPrefix(err.Error(), "acl:1: "))
			}
			c.ACL = append(c.ACL, line)
		}
		if len(c.ACL) == n {
			return true, d.Err("acl: empty block (an ACL without rules denies everything)")
		}
	case "use_identity_as_username":
		c.UseIdentityAsUsername, err = ParseBoolArg(d)
	case "use_subject_as_username":
		c.UseSubjectAsUsername, err = ParseBoolArg(d)
	default:
		return false, nil
	}
	return true, err
}

// addDoorAuth reads a door's own password file and ACL file into this
// config's policy under key. The policy is not in use yet: Start swaps it in.
func (a *App) addDoorAuth(key, passwordFile, aclFile string) error {
	p, ok := a.policy.(*broker.AuthPolicy)
	if !ok {
		return errors.New("mqtt: the app has no policy to add a door's password_file or acl_file to")
	}
	if _, done := p.Doors[key]; done {
		return nil
	}
	var d broker.DoorAuth
	var err error
	if passwordFile != "" {
		if d.Passwords, err = readFile(passwordFile, auth.ParsePasswordFile); err != nil {
			return fmt.Errorf("password_file: %w", err)
		}
	}
	if aclFile != "" {
		if d.ACL, err = readFile(aclFile, auth.ParseACLFile); err != nil {
			return fmt.Errorf("acl_file: %w", err)
		}
	}
	if p.Doors == nil {
		p.Doors = make(map[string]broker.DoorAuth)
	}
	p.Doors[key] = d
	return nil
}

// addDoorKey records a door of group (broker.DoorGroup) with the
// broker.DoorSignature sig, so that a reload can tell which sessions' doors
// changed their files or allow_anonymous.
func (a *App) addDoorKey(group, sig string) {
	p, ok := a.policy.(*broker.AuthPolicy)
	if !ok {
		return
	}
	if p.DoorKeys == nil {
		p.DoorKeys = make(map[string]map[string]int)
	}
	if p.DoorKeys[group] == nil {
		p.DoorKeys[group] = make(map[string]int)
	}
	p.DoorKeys[group][sig]++
}

// warnAnonymousUsernames warns about allow_anonymous without any password
// source: usernames are then only names, and clients get the ACL's
// anonymous rules whatever username they send (unless a door takes it from
// a verified certificate).
func (a *App) warnAnonymousUsernames() {
	p, ok := a.policy.(*broker.AuthPolicy)
	if !ok || !p.AllowAnonymous || p.Passwords != nil || p.ACL == nil || p.Identity == broker.IdentityCN || p.Identity == broker.IdentitySubject {
		return
	}
	a.logger.Warn("allow_anonymous without password_file or users: usernames are not checked, so every client " +
		"gets the ACL's anonymous rules, whatever username it sends; only usernames from verified client " +
		"certificates (use_identity_as_username) get their user's rules")
}
