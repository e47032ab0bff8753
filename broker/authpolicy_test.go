package broker

import (
	"errors"
	"strings"
	"testing"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

func TestAuthPolicyAuthenticate(t *testing.T) {
	hash, err := auth.HashPasswordPBKDF2("secret", 101, 12)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := auth.ParsePasswordFile(strings.NewReader("alice:"+hash+"\n"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	type tc struct {
		name     string
		policy   AuthPolicy
		client   Client
		password []byte
		ok       bool
	}
	withPW := func(anon bool) AuthPolicy { return AuthPolicy{Passwords: pw, AllowAnonymous: anon} }
	for _, c := range []tc{
		// No username.
		{"anon refused by default", AuthPolicy{}, Client{}, nil, false},
		{"anon allowed", AuthPolicy{AllowAnonymous: true}, Client{}, nil, true},
		{"anon door override allows", AuthPolicy{}, Client{AllowAnonymous: &yes}, nil, true},
		{"anon door override refuses", AuthPolicy{AllowAnonymous: true}, Client{AllowAnonymous: &no}, nil, false},
		{"anon with password file refused", withPW(false), Client{}, nil, false},
		{"anon with password file allowed", withPW(true), Client{}, nil, true},
		{"empty username is anonymous", withPW(false), Client{Username: ""}, []byte("x"), false},
		// Password file.
		{"right password", withPW(false), Client{Username: "alice"}, []byte("secret"), true},
		{"wrong password", withPW(false), Client{Username: "alice"}, []byte("nope"), false},
		{"no password", withPW(false), Client{Username: "alice"}, nil, false},
		{"empty password", withPW(false), Client{Username: "alice"}, []byte{}, false},
		{"unknown user", withPW(false), Client{Username: "bob"}, []byte("secret"), false},
		// mosquitto 2.0.11: with allow_anonymous true an unknown user is
		// still refused once a password file exists.
		{"unknown user, anonymous on", withPW(true), Client{Username: "bob"}, []byte("secret"), false},
		{"wrong password, door anonymous on", withPW(false), Client{Username: "alice", AllowAnonymous: &yes}, []byte("x"), false},
		// No password file: mosquitto 2.0 refuses usernames unless
		// anonymous access is on, then accepts any.
		{"username, no users, anonymous off", AuthPolicy{}, Client{Username: "alice"}, []byte("x"), false},
		{"username, no users, anonymous on", AuthPolicy{AllowAnonymous: true}, Client{Username: "alice"}, []byte("x"), true},
		{"username, no users, door anonymous on", AuthPolicy{}, Client{Username: "alice", AllowAnonymous: &yes}, nil, true},
		// Certificate identity needs no password.
		{"cert identity", withPW(false), Client{Username: "device1", CertIdentity: true}, nil, true},
		{"cert identity, no users", AuthPolicy{}, Client{Username: "device1", CertIdentity: true}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.policy.Authenticate(&c.client, c.password)
			if (err == nil) != c.ok {
				t.Fatalf("Authenticate = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrNotAuthorized) {
				t.Fatalf("error %v does not wrap ErrNotAuthorized", err)
			}
		})
	}
}

func TestAuthPolicyAuthorize(t *testing.T) {
	acl, err := auth.ParseACLFile(strings.NewReader(`
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret
pattern write devices/%u/out
`), "acl")
	if err != nil {
		t.Fatal(err)
	}
	// alice's username counts as hers only where passwords are checked.
	p := &AuthPolicy{ACL: acl, Passwords: auth.NewPasswords()}
	open := &AuthPolicy{}
	alice := &Client{ID: "c1", Username: "alice"}
	anon := &Client{ID: "c2"}
	for _, c := range []struct {
		p      *AuthPolicy
		c      *Client
		topic  string
		access Access
		want   bool
	}{
		{open, anon, "any/topic", AccessPublish, true},
		{open, anon, "$SYS/broker/x", AccessPublish, false},
		{open, anon, "$SYS/#", AccessSubscribe, true},
		{open, anon, "$SYS/broker/uptime", AccessRead, true},
		{p, alice, "alice/x", AccessPublish, true},
		{p, alice, "alice/secret", AccessPublish, false},
		{p, alice, "alice/secret", AccessRead, false},
		{p, alice, "alice/#", AccessSubscribe, true},
		{p, alice, "bob/x", AccessPublish, false},
		{p, alice, "devices/alice/out", AccessPublish, true},
		{p, alice, "devices/alice/out", AccessRead, false},
		{p, alice, "public/news", AccessRead, false}, // anonymous rules are not alice's
		{p, anon, "public/news", AccessRead, true},
		{p, anon, "public/#", AccessSubscribe, true},
		{p, anon, "public/news", AccessPublish, false},
		{p, anon, "$share/g/public/news", AccessSubscribe, true}, // the hook checks every SUBSCRIBE filter as a subscription
		{p, anon, "$share/g/other", AccessSubscribe, false},
		{p, anon, "devices/x/out", AccessPublish, false},
		{p, &Client{ID: "c3", Username: "dev1", CertIdentity: true}, "devices/dev1/out", AccessPublish, true},
	} {
		if got := c.p.Authorize(c.c, c.topic, c.access); got != c.want {
			t.Errorf("user %q %v %q = %v, want %v", c.c.Username, c.access, c.topic, got, c.want)
		}
	}
}

// TestAuthPolicyDoors: a door's own password file and ACL replace the
// broker-wide ones for its clients only; a client whose door key is no
// longer in the policy is refused everything.
func TestAuthPolicyDoors(t *testing.T) {
	hash, err := auth.HashPasswordPBKDF2("pw", 101, 12)
	if err != nil {
		t.Fatal(err)
	}
	global, _ := auth.ParsePasswordFile(strings.NewReader("bob:"+hash+"\n"), "global")
	door, _ := auth.ParsePasswordFile(strings.NewReader("alice:"+hash+"\n"), "door")
	doorACL, err := auth.ParseACLFile(strings.NewReader("user alice\ntopic write alice/#\n"), "door acl")
	if err != nil {
		t.Fatal(err)
	}
	p := &AuthPolicy{Passwords: global, Doors: map[string]DoorAuth{
		"d":       {Passwords: door, ACL: doorACL},
		"aclonly": {ACL: doorACL},
	}}
	for _, c := range []struct {
		user, key string
		ok        bool
	}{
		{"alice", "d", true}, {"bob", "d", false},
		{"bob", "", true}, {"alice", "", false},
		{"bob", "aclonly", true}, // the global users with the door's ACL
		{"bob", "gone", false},
	} {
		err := p.Authenticate(&Client{Username: c.user, AuthKey: c.key}, []byte("pw"))
		if (err == nil) != c.ok {
			t.Errorf("%s with key %q: %v, want ok=%v", c.user, c.key, err, c.ok)
		}
	}
	alice := &Client{Username: "alice", AuthKey: "d"}
	if !p.Authorize(alice, "alice/x", AccessPublish) || p.Authorize(alice, "other/x", AccessPublish) {
		t.Error("the door's ACL does not decide for its client")
	}
	if !p.Authorize(&Client{Username: "bob"}, "other/x", AccessPublish) {
		t.Error("the door's ACL applies outside the door")
	}
	if p.Authorize(&Client{Username: "alice", AuthKey: "gone"}, "alice/x", AccessPublish) {
		t.Error("a client whose door's files are gone may still publish")
	}
}

// TestAnonymousUsernameGetsAnonymousACL: with allow_anonymous and no
// password source, a username is not an identity: a client claiming
// "alice" gets the anonymous rules, not alice's; one whose username comes
// from a verified certificate gets its user's.
func TestAnonymousUsernameGetsAnonymousACL(t *testing.T) {
	acl, err := auth.ParseACLFile(strings.NewReader("topic read public/#\nuser alice\ntopic readwrite alice/#\n"), "acl")
	if err != nil {
		t.Fatal(err)
	}
	p := &AuthPolicy{ACL: acl, AllowAnonymous: true}
	claimed := &Client{ID: "c1", Username: "alice"}
	if err := p.Authenticate(claimed, nil); err != nil {
		t.Fatalf("anonymous access refused: %v", err)
	}
	if p.Authorize(claimed, "alice/x", AccessPublish) || p.Authorize(claimed, "alice/x", AccessRead) {
		t.Error("a client only claiming to be alice got alice's ACL")
	}
	if !p.Authorize(claimed, "public/news", AccessRead) {
		t.Error("a client claiming a username lost the anonymous rules")
	}
	cert := &Client{ID: "c2", Username: "alice", CertIdentity: true}
	if !p.Authorize(cert, "alice/x", AccessPublish) {
		t.Error("alice from a verified certificate did not get her ACL")
	}
}
