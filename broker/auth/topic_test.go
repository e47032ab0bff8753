package auth

import (
	"strings"
	"testing"
)

func TestMatchFilter(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/b", "a/b/", false},
		{"#", "a", true},
		{"#", "a/b/c", true},
		{"#", "/", true},
		{"#", "$SYS/uptime", false}, // '$' topics need a literal first level
		{"+/uptime", "$SYS/uptime", false},
		{"$SYS/#", "$SYS/uptime", true},
		{"$SYS/#", "$SYS", true},
		{"$SYS/+", "$SYS/uptime", true},
		{"$share/#", "$share/x", true},
		{"$SYS/#", "SYS/uptime", false},
		{"a/#", "a", true}, // parent level
		{"a/#", "a/", true},
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"a/#", "b/a", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true}, // empty level
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"+", "a", true},
		{"+", "", false},
		{"+", "/", false},
		{"+/+", "/", true}, // two empty levels
		{"/+", "/a", true},
		{"/+", "a", false},
		{"+/b/+", "a/b/c", true},
		{"+/b/+", "a/x/c", false},
		{"a/+/#", "a/b", true},
		{"a/+/#", "a", false},
		{"+/#", "a", true},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
		{"a b/c", "a b/c", true}, // spaces are ordinary characters
		{"ä/+", "ä/ö", true},
		// invalid input never matches
		{"a/#/b", "a/x/b", false},
		{"a+", "a+", false},
		{"a/b#", "a/b#", false},
		{"", "", false},
		{"a", "", false},
		{"#", "a/+", false},
		{"#", "a/#", false},
		{"a\x00", "a\x00", false},
		{"\xff", "\xff", false},
	} {
		if got := MatchFilter(c.filter, c.topic); got != c.want {
			t.Errorf("MatchFilter(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	for _, f := range []string{"a", "#", "+", "a/#", "+/+", "/", "//", "a/+/b", "/#", "+/#", "$SYS/#", "a b", "$share/g/a/#", "$share/g/#", "$share/g//", "$sharex/#", strings.Repeat("a", maxTopicLen)} {
		if err := ValidFilter(f); err != nil {
			t.Errorf("ValidFilter(%q) = %v, want nil", f, err)
		}
	}
	for _, c := range []struct{ filter, want string }{
		{"", "empty"},
		{"a#", "whole topic level"},
		{"a/#b", "whole topic level"},
		{"#/a", "last level"},
		{"a/#/", "last level"},
		{"a+", "whole topic level"},
		{"+a", "whole topic level"},
		{"a/b+/c", "whole topic level"},
		{"a\x00b", "NUL"},
		{"a\xffb", "UTF-8"},
		{strings.Repeat("a", maxTopicLen+1), "maximum"},
		{"$share/g", "$share/<name>/<filter>"},
		{"$share", "$share/<name>/<filter>"},
		{"$share//a", "empty share name"},
		{"$share/g/", "no topic filter"},
		{"$share/g+/a", "must not contain wildcards"},
		{"$share/#/a", "must not contain wildcards"},
		{"$share/g/a#", "whole topic level"},
	} {
		err := ValidFilter(c.filter)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ValidFilter(%.30q) = %v, want error containing %q", c.filter, err, c.want)
		}
	}
}

func TestValidTopicName(t *testing.T) {
	for _, s := range []string{"a", "/", "a/b", "$SYS/x", "a b", "ä", "a//b"} {
		if err := ValidTopicName(s); err != nil {
			t.Errorf("ValidTopicName(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "a/+", "#", "a/#", "a+b", "a\x00", "\xc3", strings.Repeat("x", maxTopicLen+1)} {
		if err := ValidTopicName(s); err == nil {
			t.Errorf("ValidTopicName(%.30q) = nil, want error", s)
		}
	}
}

func TestFilterCovers(t *testing.T) {
	for _, c := range []struct {
		acl, sub string
		want     bool
	}{
		{"#", "#", true},
		{"#", "a/#", true},
		{"#", "+/+", true},
		{"#", "$SYS/#", false},
		{"$SYS/#", "$SYS/#", true},
		{"$SYS/#", "$SYS/+/x", true},
		{"+/#", "$SYS/#", false},
		{"a/#", "a/#", true},
		{"a/#", "a", true},
		{"a/#", "a/b/+", true},
		{"a/#", "#", false},
		{"a/#", "+/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false}, // a/# also matches a/b/c
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"a/b", "a/+", false},
		{"a/b", "a/b", true},
		{"a/b", "a/#", false},
		{"+/+", "a/+", true},
		{"+/+", "+/+", true},
		{"+/+", "+/#", false},
		{"+/#", "a", true},
		{"a/+/#", "a/b", true},
		{"a/+/#", "a/+/c/#", true},
		{"a/+/c", "a/+/c", true},
		{"a/+/c", "a/+/d", false},
	} {
		if got := filterCovers(c.acl, c.sub); got != c.want {
			t.Errorf("filterCovers(%q, %q) = %v, want %v", c.acl, c.sub, got, c.want)
		}
	}
}

func TestIsSysTopicAndParseShared(t *testing.T) {
	for s, want := range map[string]bool{"$SYS": true, "$SYS/broker/uptime": true, "$SYSTEM": true, "SYS/x": false, "$sys/x": false, "a/$SYS": false} {
		if IsSysTopic(s) != want {
			t.Errorf("IsSysTopic(%q) != %v", s, want)
		}
	}
	if g, f, ok := ParseShared("$share/grp/a/b/#"); !ok || g != "grp" || f != "a/b/#" {
		t.Errorf("ParseShared = %q %q %v", g, f, ok)
	}
	for _, s := range []string{"a/b", "$share/grp", "$SHARE/g/a"} {
		if _, _, ok := ParseShared(s); ok {
			t.Errorf("ParseShared(%q) ok", s)
		}
	}
}
