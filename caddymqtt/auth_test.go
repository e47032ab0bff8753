package caddymqtt

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

func parseGlobal(t *testing.T, input string) (*App, error) {
	t.Helper()
	d := caddyfile.NewTestDispenser(input)
	v, err := parseGlobalOption(d, nil)
	if err != nil {
		return nil, err
	}
	app := new(App)
	if err := json.Unmarshal(v.(httpcaddyfile.App).Value, app); err != nil {
		t.Fatal(err)
	}
	return app, nil
}

func TestAuthCaddyfile(t *testing.T) {
	hash, _ := auth.HashPasswordPBKDF2("pw", 101, 12)
	app, err := parseGlobal(t, `mqtt {
		password_file /etc/mosquitto/passwd
		user alice `+hash+`
		acl {
			user alice
			topic write alice/#
			topic deny "alice/a b"
			pattern read devices/%u/#
			topic read "#"
		}
		use_identity_as_username
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := AuthConfig{
		PasswordFile:          "/etc/mosquitto/passwd",
		Users:                 []User{{"alice", hash}},
		ACL:                   []string{"user alice", "topic write alice/#", "topic deny alice/a b", "pattern read devices/%u/#", "topic read #"},
		UseIdentityAsUsername: true,
	}
	got, _ := json.Marshal(app.AuthConfig)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Fatalf("got %s\nwant %s", got, exp)
	}

	for _, c := range []struct{ input, wantErr string }{
		{"mqtt {\n\tuser alice secret\n}", `mqtt user "alice": want a password hash ($7$, $6$, $argon2id$ or bcrypt): password is not hashed (plain text is not supported; hash it with mosquitto_passwd -U or caddy mqtt passwd), at Testfile:2`},
		{"mqtt {\n\tuser alice\n}", "at Testfile:2"},
		{"mqtt {\n\tacl {\n\t\ttopic read a/#\n\t\ttopik read b\n\t}\n}", `acl: unknown keyword "topik" (want topic, pattern or user), at Testfile:4`},
		{"mqtt {\n\tacl {\n\t\ttopic maybe a b\n\t}\n}", "at Testfile:3"},
		{"mqtt {\n\tacl {\n\t}\n}", "empty block"},
		{"mqtt {\n\tacl rules.txt\n}", "acl_file"},
		{"mqtt {\n\tacl {\n\t\ttopic read #\n\t}\n}", `write "#"`},
		{"mqtt {\n\tpassword_file\n}", "at Testfile:2"},
	} {
		_, err := parseGlobal(t, c.input)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%q: error %v, want it to contain %q", c.input, err, c.wantErr)
		}
	}
}

func TestDoorIdentityCaddyfile(t *testing.T) {
	h := new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mqtt {\n\tuse_identity_as_username false\n}")); err != nil {
		t.Fatal(err)
	}
	if DoorIdentity(h.UseIdentityAsUsername, h.UseSubjectAsUsername) != broker.IdentityNone {
		t.Fatal("use_identity_as_username false does not override")
	}
	h = new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mqtt {\n\tuse_subject_as_username\n}")); err != nil {
		t.Fatal(err)
	}
	if DoorIdentity(h.UseIdentityAsUsername, h.UseSubjectAsUsername) != broker.IdentitySubject {
		t.Fatal("use_subject_as_username not set")
	}
	if DoorIdentity(nil, nil) != broker.IdentityDefault {
		t.Fatal("unset door identity must defer to the app")
	}
}

func TestBuildPolicy(t *testing.T) {
	dir := t.TempDir()
	hash, _ := auth.HashPasswordPBKDF2("secret", 101, 12)
	pwPath := filepath.Join(dir, "passwd")
	aclPath := filepath.Join(dir, "acl")
	write := func(path, s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(pwPath, "# users\nalice:"+hash+"\n")
	write(aclPath, "user alice\ntopic readwrite alice/#\n")
	bobHash, _ := auth.HashPasswordPBKDF2("bobpw", 101, 12)

	c := AuthConfig{PasswordFile: pwPath, ACLFile: aclPath, Users: []User{{"bob", bobHash}}, UseSubjectAsUsername: true}
	p, err := c.BuildPolicy(false)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Passwords.Check("alice", "secret") || !p.Passwords.Check("bob", "bobpw") {
		t.Fatal("users from the file and inline users must both work")
	}
	if !p.ACL.CanPublish("alice", "c", "alice/x") || p.ACL.CanPublish("bob", "c", "alice/x") {
		t.Fatal("acl_file not applied")
	}
	if p.Identity != broker.IdentitySubject || p.AllowAnonymous {
		t.Fatalf("identity %v anonymous %v", p.Identity, p.AllowAnonymous)
	}

	write(filepath.Join(dir, "badpw"), "alice:"+hash+"\nbob:plaintext\n")
	write(filepath.Join(dir, "badacl"), "user alice\ntopic readwrite alice/#\ntopic read a/#/b\n")
	for _, bad := range []struct {
		c       AuthConfig
		wantErr string
	}{
		{AuthConfig{PasswordFile: filepath.Join(dir, "badpw")}, "badpw:2: "},
		{AuthConfig{ACLFile: filepath.Join(dir, "badacl")}, "badacl:3: "},
		{AuthConfig{PasswordFile: filepath.Join(dir, "missing")}, "no such file"},
		{AuthConfig{PasswordFile: pwPath, Users: []User{{"alice", hash}}}, "duplicate user"},
		{AuthConfig{Users: []User{{"carol", "plaintext"}}}, "password is not hashed"},
		{AuthConfig{ACLFile: aclPath, ACL: []string{"topic read x"}}, "not both"},
		{AuthConfig{UseIdentityAsUsername: true, UseSubjectAsUsername: true}, "exclude each other"},
	} {
		_, err := bad.c.BuildPolicy(false)
		if err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Errorf("%+v: error %v, want %q", bad.c, err, bad.wantErr)
		}
	}
}
