package auth

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzParsePasswordFile: parsing never panics; every file the
// authenticating parser accepts is also accepted by the editor, and the
// editor writes it back so that it parses to the same users.
func FuzzParsePasswordFile(f *testing.F) {
	f.Add("alice:" + alice7 + "\n# comment\n\nbob:" + bob6 + "\r\n")
	f.Add("carol:" + carolB)
	f.Add("x:$argon2id$v=19$m=64,t=2,p=2$c2FsdHNhbHQ$bvEEHFpgKEQFx6ehxtpGfAXNPWVE7ujbf2n5n9+gez8\n")
	f.Add("x:$7$1$YQ==$" + strings.Repeat("A", 86) + "==\n")
	f.Add(" a : $6$YQ$YQ \n")
	f.Add("a:b:c\n:x\n")
	f.Fuzz(func(t *testing.T, src string) {
		p, err := ParsePasswordFile(strings.NewReader(src), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		ed, err := ReadPasswordFile(strings.NewReader(src), "fuzz")
		if err != nil {
			t.Fatalf("ParsePasswordFile accepted what ReadPasswordFile refuses: %v", err)
		}
		var buf bytes.Buffer
		if _, err := ed.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		p2, err := ParsePasswordFile(&buf, "rewritten")
		if err != nil {
			t.Fatalf("rewritten file does not parse: %v\n%q", err, buf.String())
		}
		if !reflect.DeepEqual(p.Users(), p2.Users()) {
			t.Fatalf("users changed: %q -> %q", p.Users(), p2.Users())
		}
	})
}

// FuzzParseACLFile: parsing and checking never panic, and WriteTo output
// parses back to an identical ACL.
func FuzzParseACLFile(f *testing.F) {
	f.Add("topic read public/#\nuser alice\ntopic alice/#\ntopic deny alice/x\npattern write d/%c/%u\n", "alice", "c1", "alice/y")
	f.Add("pattern readwrite %u/#\n# c\n\n", "+", "#", "a/b")
	f.Add("topic read a b c\nuser  x y \r\ntopic $SYS/#\n", "x y", "", "$SYS/x")
	f.Add("topic write #\n", "", "c", "$SYS/a")
	f.Add("pattern read %c%c%u\n", "u", "c/d", "ccu")
	f.Fuzz(func(t *testing.T, src, user, client, topic string) {
		a, err := ParseACLFile(strings.NewReader(src), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		a.CanPublish(user, client, topic)
		a.CanRead(user, client, topic)
		a.CanSubscribe(user, client, topic)
		var buf bytes.Buffer
		if _, err := a.WriteTo(&buf); err != nil {
			t.Fatalf("cannot write parsed ACL: %v", err)
		}
		b, err := ParseACLFile(bytes.NewReader(buf.Bytes()), "rewritten")
		if err != nil {
			t.Fatalf("rewritten ACL does not parse: %v\n%s", err, buf.String())
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the ACL:\n%s", buf.String())
		}
	})
}

// refMatch is an independent, recursive statement of MQTT matching for
// valid inputs, used to cross-check MatchFilter.
func refMatch(f, t []string, first bool) bool {
	if len(f) == 0 {
		return len(t) == 0
	}
	if f[0] == "#" {
		return !(first && len(t) > 0 && strings.HasPrefix(t[0], "$"))
	}
	if len(t) == 0 {
		return false
	}
	if f[0] == "+" {
		if first && strings.HasPrefix(t[0], "$") {
			return false
		}
		return refMatch(f[1:], t[1:], false)
	}
	return f[0] == t[0] && refMatch(f[1:], t[1:], false)
}

// FuzzMatchFilter: no panics; MatchFilter agrees with refMatch on valid
// input; a valid topic matches itself; coverage is consistent with
// matching (a filter covering a subscription matches everything the
// subscription matches).
func FuzzMatchFilter(f *testing.F) {
	for _, s := range [][3]string{
		{"a/#", "a", "a/+"}, {"#", "$SYS/x", "+/x"}, {"+/+", "/", "#"}, {"a/+/c", "a//c", "a/b/c"},
		{"$SYS/#", "$SYS", "$SYS/+"}, {"a/b#", "a/b#", "a"}, {"", "", ""}, {"+", "a/b", "+/#"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, filter, topic, sub string) {
		got := MatchFilter(filter, topic)
		fValid := ValidFilter(filter) == nil && !strings.HasPrefix(filter, sharePrefix)
		tValid := ValidTopicName(topic) == nil
		if !fValid || !tValid {
			if got && !(ValidFilter(filter) == nil && tValid) {
				t.Fatalf("MatchFilter(%q, %q) matched invalid input", filter, topic)
			}
			return
		}
		tl := strings.Split(topic, "/")
		if want := refMatch(strings.Split(filter, "/"), tl, true); got != want {
			t.Fatalf("MatchFilter(%q, %q) = %v, reference says %v", filter, topic, got, want)
		}
		if !MatchFilter(topic, topic) {
			t.Fatalf("topic %q does not match itself", topic)
		}
		if got && !filterCovers(filter, topic) {
			t.Fatalf("MatchFilter(%q, %q) but filterCovers is false", filter, topic)
		}
		if ValidFilter(sub) == nil && !strings.HasPrefix(sub, sharePrefix) {
			if !filterCovers(sub, sub) {
				t.Fatalf("filter %q does not cover itself", sub)
			}
			if filterCovers(filter, sub) && MatchFilter(sub, topic) && !got {
				t.Fatalf("%q covers %q which matches %q, but %q does not match it", filter, sub, topic, filter)
			}
		}
	})
}
