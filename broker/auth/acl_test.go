package auth

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func mustACL(t *testing.T, src string) *ACL {
	t.Helper()
	a, err := ParseACLFile(strings.NewReader(src), "acl")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// op is one access check: kind is "pub", "sub" or "read".
type op struct {
	kind, user, client, topic string
	want                      bool
}

func runOps(t *testing.T, a *ACL, ops []op) {
	t.Helper()
	for _, o := range ops {
		var got bool
		switch o.kind {
		case "pub":
			got = a.CanPublish(o.user, o.client, o.topic)
		case "sub":
			got = a.CanSubscribe(o.user, o.client, o.topic)
		case "read":
			got = a.CanRead(o.user, o.client, o.topic)
		default:
			t.Fatalf("bad op %q", o.kind)
		}
		if got != o.want {
			t.Errorf("%s(user=%q, client=%q, %q) = %v, want %v", o.kind, o.user, o.client, o.topic, got, o.want)
		}
	}
}

func TestACLAnonymousAndUserSections(t *testing.T) {
	a := mustACL(t, `
# rules before any "user" line are for clients without a username
topic read public/#
topic write anon/in

user alice
topic readwrite alice/#
topic read shared/+

user bob
topic bob/data
`)
	runOps(t, a, []op{
		// anonymous
		{"read", "", "c1", "public/news", true},
		{"read", "", "c1", "public", true},
		{"pub", "", "c1", "public/news", false}, // read only
		{"pub", "", "c1", "anon/in", true},
		{"read", "", "c1", "anon/in", false}, // write only
		{"read", "", "c1", "alice/x", false},
		// alice does NOT inherit the anonymous rules
		{"read", "alice", "c2", "public/news", false},
		{"pub", "alice", "c2", "alice/x/y", true},
		{"read", "alice", "c2", "alice", true},
		{"read", "alice", "c2", "shared/1", true},
		{"pub", "alice", "c2", "shared/1", false},
		{"read", "alice", "c2", "shared/1/2", false},
		// bob: no access word means readwrite
		{"pub", "bob", "c3", "bob/data", true},
		{"read", "bob", "c3", "bob/data", true},
		{"read", "bob", "c3", "bob/data/x", false},
		// unknown user: no section, no patterns -> default deny
		{"read", "mallory", "c4", "public/news", false},
		{"pub", "mallory", "c4", "bob/data", false},
	})
}

func TestACLDenyFirst(t *testing.T) {
	a := mustACL(t, `
user alice
topic readwrite #
topic deny secret/#
topic read $SYS/#
topic deny $SYS/broker/clients/#
`)
	runOps(t, a, []op{
		{"pub", "alice", "c", "open/x", true},
		{"pub", "alice", "c", "secret", false}, // deny listed after allow still wins
		{"read", "alice", "c", "secret/a/b", false},
		{"read", "alice", "c", "secret2", true},
		{"read", "alice", "c", "$SYS/broker/uptime", true},
		{"read", "alice", "c", "$SYS/broker/clients/connected", false},
		// subscribe: allowed when covered; partial deny overlap is left to delivery
		{"sub", "alice", "c", "#", true},
		{"sub", "alice", "c", "secret/#", false},
		{"sub", "alice", "c", "secret/x", false},
		{"sub", "alice", "c", "$SYS/#", true},
		{"sub", "alice", "c", "$SYS/broker/clients/#", false},
	})
}

func TestACLDefaultDenyAndNil(t *testing.T) {
	empty := mustACL(t, "# nothing\n\n")
	runOps(t, empty, []op{
		{"pub", "", "c", "a", false},
		{"read", "alice", "c", "a", false},
		{"sub", "alice", "c", "#", false},
	})
	var none *ACL // no ACL configured: everything but $SYS/$share writes
	runOps(t, none, []op{
		{"pub", "alice", "c", "a/b", true},
		{"read", "", "c", "$SYS/x", true},
		{"sub", "", "c", "#", true},
		{"pub", "alice", "c", "$SYS/broker/x", false},
		{"pub", "alice", "c", "$share/g/x", false},
		{"pub", "alice", "c", "a/+", false}, // not a topic name
		{"sub", "alice", "c", "a/#/b", false},
		{"read", "alice", "c", "", false},
	})
}

func TestACLSysWriteAlwaysDenied(t *testing.T) {
	a := mustACL(t, "topic readwrite $SYS/#\ntopic readwrite #\npattern readwrite $SYS/%u\nuser root\ntopic readwrite $SYS/#\ntopic $SYSTEM/x\n")
	runOps(t, a, []op{
		{"pub", "", "c", "$SYS/broker/uptime", false},
		{"pub", "root", "c", "$SYS/broker/uptime", false},
		{"pub", "root", "c", "$SYS", false},
		{"pub", "root", "c", "$SYSTEM/x", false}, // mosquitto compares the "$SYS" prefix only
		{"pub", "root", "c", "$share/g/t", false},
		{"read", "root", "c", "$SYS/broker/uptime", true},
		{"sub", "root", "c", "$SYS/#", true},
		{"pub", "", "c", "normal", true},
	})
}

func TestACLDollarTopics(t *testing.T) {
	a := mustACL(t, "user u\ntopic readwrite #\ntopic read +/status\nuser v\ntopic read $SYS/#\ntopic readwrite $app/+\n")
	runOps(t, a, []op{
		{"read", "u", "c", "$SYS/broker/uptime", false}, // '#' does not cover $ topics
		{"read", "u", "c", "$SYS/status", false},
		{"read", "u", "c", "x/status", true},
		{"sub", "u", "c", "$SYS/#", false},
		{"sub", "u", "c", "#", true},
		{"read", "v", "c", "$SYS/broker/uptime", true},
		{"pub", "v", "c", "$app/x", true}, // non-$SYS '$' topics follow the rules
		{"read", "v", "c", "app/x", false},
	})
}

func TestACLPatterns(t *testing.T) {
	a := mustACL(t, `
pattern readwrite users/%u/#
pattern write devices/%c/telemetry
pattern read devices/%c/cmd/+
pattern read both/%u/%c
pattern read prefix-%u/x
pattern deny users/%u/locked/#
pattern read everyone/#
`)
	runOps(t, a, []op{
		{"pub", "alice", "dev1", "users/alice/inbox", true},
		{"read", "alice", "dev1", "users/alice", true},
		{"pub", "alice", "dev1", "users/bob/inbox", false},
		{"pub", "alice", "dev1", "users/alice/locked/x", false}, // pattern deny first
		{"sub", "alice", "dev1", "users/alice/#", true},
		{"sub", "alice", "dev1", "users/+/#", false},
		{"sub", "alice", "dev1", "users/alice/locked/#", false},
		{"pub", "alice", "dev1", "devices/dev1/telemetry", true},
		{"read", "alice", "dev1", "devices/dev1/telemetry", false},
		{"read", "alice", "dev1", "devices/dev1/cmd/reboot", true},
		{"read", "alice", "dev1", "devices/dev2/cmd/reboot", false},
		{"sub", "alice", "dev1", "devices/dev1/cmd/+", true},
		{"sub", "alice", "dev1", "devices/dev1/cmd/#", false},
		{"read", "alice", "dev1", "both/alice/dev1", true},
		{"read", "alice", "dev1", "prefix-alice/x", true}, // substitution inside a level, like mosquitto 2.0
		{"read", "alice", "dev1", "everyone/x", true},
		// no username: %u patterns are skipped, the others still apply
		{"pub", "", "dev1", "devices/dev1/telemetry", true},
		{"read", "", "dev1", "users//x", false},
		{"read", "", "dev1", "both//dev1", false},
		{"read", "", "dev1", "everyone/x", true},
		{"pub", "", "dev1", "users/%u/x", false},
		// empty client id: %c patterns are skipped
		{"pub", "alice", "", "devices//telemetry", false},
		{"pub", "alice", "", "users/alice/x", true},
		// wildcard injection: any '+' or '#' in username or client id denies pattern access
		{"read", "+", "dev1", "users/bob/x", false},
		{"read", "a#", "dev1", "users/a#/x", false},
		{"pub", "alice", "dev+", "users/alice/x", false},
		{"pub", "alice", "#", "devices/x/telemetry", false},
		{"read", "alice", "d#", "everyone/x", false},
		// '/' in a client id would reach into other clients' %c subtrees
		{"pub", "alice", "dev1/x", "devices/dev1/x/telemetry", false},
		{"pub", "alice", "dev1/x", "users/alice/x", false},
		// '/' in a username is allowed (mosquitto 2.0): it is authenticated
		{"pub", "site/alice", "dev1", "users/site/alice/x", true},
	})
}

func TestACLUserRulesBeforePatterns(t *testing.T) {
	a := mustACL(t, `
pattern deny private/%u/#
pattern readwrite private/#
user alice
topic readwrite private/alice/#
topic deny blocked/#
user a+b
topic read ok/#
`)
	runOps(t, a, []op{
		// alice's own allow wins before the pattern deny is consulted (mosquitto order)
		{"pub", "alice", "c", "private/alice/x", true},
		// bob has no section: the pattern deny applies
		{"pub", "bob", "c", "private/bob/x", false},
		{"pub", "bob", "c", "private/other", true},
		// a user-section deny stops before patterns
		{"pub", "alice", "c", "blocked/x", false},
		// a user with '+' in the name still gets its own section; only patterns are refused
		{"read", "a+b", "c", "ok/1", true},
		{"read", "a+b", "c", "private/x", false},
	})
}

func TestACLSharedSubscriptions(t *testing.T) {
	a := mustACL(t, "user u\ntopic read jobs/+\n")
	runOps(t, a, []op{
		{"sub", "u", "c", "$share/workers/jobs/+", true},
		{"sub", "u", "c", "$share/workers/jobs/#", false},
		{"sub", "u", "c", "$share/workers", false},
		{"sub", "u", "c", "jobs/a", true},
	})
	if err := a.AddTopic("u", Read, "$share/g/x"); err == nil {
		t.Error("AddTopic accepted a $share filter")
	}
}

func TestACLBuilder(t *testing.T) {
	a := NewACL()
	for _, err := range []error{
		a.AddTopic("", Read, "public/#"),
		a.AddTopic("alice", ReadWrite, "alice/#"),
		a.AddTopic("alice", Deny, "alice/secret"),
		a.AddPattern(Write, "clients/%c/out"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	fromFile := mustACL(t, "topic read public/#\nuser alice\ntopic readwrite alice/#\ntopic deny alice/secret\npattern write clients/%c/out\n")
	if !reflect.DeepEqual(a, fromFile) {
		t.Errorf("builder and file ACLs differ:\n%+v\n%+v", a, fromFile)
	}
	runOps(t, a, []op{
		{"read", "", "c", "public/x", true},
		{"pub", "alice", "c", "alice/x", true},
		{"pub", "alice", "c", "alice/secret", false},
		{"pub", "alice", "c9", "clients/c9/out", true},
	})
	for _, err := range []error{
		a.AddTopic("x", ReadWrite, "a/#/b"),
		a.AddTopic("x", Access(7), "a"),
		a.AddPattern(Read, ""),
	} {
		if err == nil {
			t.Error("invalid rule accepted")
		}
	}
}

func TestParseAccess(t *testing.T) {
	for s, want := range map[string]Access{"read": Read, "write": Write, "readwrite": ReadWrite, "deny": Deny} {
		if got, err := ParseAccess(s); err != nil || got != want || got.String() != s {
			t.Errorf("ParseAccess(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseAccess("READ"); err == nil {
		t.Error("ParseAccess is case-insensitive; mosquitto is not")
	}
	if Access(9).String() != "Access(9)" {
		t.Error(Access(9).String())
	}
}

func TestParseACLFileSyntax(t *testing.T) {
	a := mustACL(t, "topic read a b/c d\n"+ // filter with spaces: rest of the line
		"topic   write    spaced/out   \n"+ // extra blanks
		"topic\tread\ttabbed\n"+
		"topic read\n"+ // a single word is the filter (mosquitto): topic "read", readwrite
		"user  bob smith  \n"+ // username is the rest of the line
		"topic bob/#\r\n"+
		"   # indented comment\n"+
		"#topic readwrite #\n")
	runOps(t, a, []op{
		{"read", "", "c", "a b/c d", true},
		{"pub", "", "c", "spaced/out", true},
		{"read", "", "c", "tabbed", true},
		{"pub", "", "c", "read", true},
		{"read", "bob smith", "c", "bob/1", true},
		{"pub", "bob smith", "c", "bob/1", true},
		{"read", "bob smith", "c", "other", false},
	})
}

func TestParseACLFileErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"topic\n", `acl.conf:1: missing topic filter after "topic"`},
		{"# ok\npattern   \n", `acl.conf:2: missing topic filter after "pattern"`},
		{"topic reed a/b\n", `acl.conf:1: invalid access "reed"`},
		{"topic a b\n", `acl.conf:1: invalid access "a"`},
		{"\n\ntopic read a/#/b\n", `acl.conf:3: invalid topic filter "a/#/b"`},
		{"topic read a+\n", `acl.conf:1: invalid topic filter "a+"`},
		{"pattern read $share/g/#\n", `acl.conf:1: invalid topic filter "$share/g/#"`},
		{"user\n", `acl.conf:1: missing username after "user"`},
		{"user   \t\n", `acl.conf:1: missing username after "user"`},
		{"topic read a\nusers bob\n", `acl.conf:2: unknown keyword "users"`},
		{"Topic read a\n", `acl.conf:1: unknown keyword "Topic"`},
		{"topic read \xff\n", `acl.conf:1: invalid topic filter`},
	} {
		_, err := ParseACLFile(strings.NewReader(c.src), "acl.conf")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseACLFile(%q) error = %v, want %q", c.src, err, c.want)
		}
	}
}

func TestACLWriteToRoundTrip(t *testing.T) {
	src := "topic read public/#\nuser alice\ntopic deny alice/secret\ntopic alice/#\npattern write c/%c\nuser bob\ntopic read a b\nuser alice\ntopic write more\n"
	a := mustACL(t, src)
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	want := "topic read public/#\nuser alice\ntopic deny alice/secret\ntopic readwrite alice/#\ntopic write more\nuser bob\ntopic read a b\npattern write c/%c\n"
	if buf.String() != want {
		t.Errorf("WriteTo =\n%s\nwant\n%s", buf.String(), want)
	}
	b := mustACL(t, buf.String())
	if !reflect.DeepEqual(a, b) {
		t.Error("round trip changed the ACL")
	}
	c := NewACL()
	c.AddTopic(" padded ", Read, "x")
	if _, err := c.WriteTo(&buf); err == nil {
		t.Error("WriteTo accepted an unrepresentable username")
	}
}
