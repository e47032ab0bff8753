package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestAuthPolicyReadsAnyTopic: only a client no ACL applies to reads every
// topic without a check per topic.
func TestAuthPolicyReadsAnyTopic(t *testing.T) {
	acl, err := auth.ParseACLFile(strings.NewReader("topic read public/#\n"), "acl")
	if err != nil {
		t.Fatal(err)
	}
	p := &AuthPolicy{AllowAnonymous: true, Doors: map[string]DoorAuth{"open": {}, "ruled": {ACL: acl}}}
	for _, c := range []struct {
		name string
		p    *AuthPolicy
		c    Client
		any  bool
	}{
		{"no ACL", p, Client{}, true},
		{"a door without an ACL of its own", p, Client{AuthKey: "open"}, true},
		{"a door's ACL", p, Client{AuthKey: "ruled"}, false},
		{"a door whose files are gone", p, Client{AuthKey: "gone"}, false},
		{"the broker's ACL", &AuthPolicy{AllowAnonymous: true, ACL: acl}, Client{}, false},
		{"the broker's ACL under a door without one", &AuthPolicy{ACL: acl, Doors: map[string]DoorAuth{"open": {}}}, Client{AuthKey: "open"}, false},
	} {
		if got := c.p.ReadsAnyTopic(&c.c); got != c.any {
			t.Errorf("%s: ReadsAnyTopic %v, want %v", c.name, got, c.any)
		}
		// Where it says yes, Authorize agrees for a topic it would check.
		if c.any && !c.p.Authorize(&c.c, "private/x", AccessRead) {
			t.Errorf("%s: ReadsAnyTopic but Authorize refuses a read", c.name)
		}
	}
}

// TestReadGateFollowsThePolicy: a subscriber that could read everything
// stops getting a topic as soon as a reload puts an ACL in force that
// refuses it, and gets it again when the old policy comes back. The
// connection's memo of "reads any topic" must not outlive its policy.
func TestReadGateFollowsThePolicy(t *testing.T) {
	open := &AuthPolicy{AllowAnonymous: true}
	acl, err := auth.ParseACLFile(strings.NewReader("topic write t/secret\ntopic readwrite t/public\n"), "acl")
	if err != nil {
		t.Fatal(err)
	}
	ruled := &AuthPolicy{AllowAnonymous: true, ACL: acl}
	tb := newTestBroker(t, Options{}, open)
	sub := dialRaw(t, tb.addr, 4, "sub", true, packets.Properties{})
	sub.subscribe("t/#", 0)
	pub := dialRaw(t, tb.addr, 4, "pub", true, packets.Properties{})
	publish := func(topic, payload string) {
		pub.send(publishPk(0, 0, topic, payload))
	}
	// expect reads until the last message published arrives: one
	// publisher's messages reach a subscriber in order, so a refused one
	// that was delivered all the same comes before it.
	expect := func(when string, want ...string) {
		t.Helper()
		var got []string
		for len(got) == 0 || got[len(got)-1] != want[len(want)-1] {
			pk := sub.read(5 * time.Second)
			if pk.FixedHeader.Type != packets.Publish {
				t.Fatalf("%s: got %v after %q, want %q", when, pk.FixedHeader.Type, got, want)
			}
			got = append(got, string(pk.Payload))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: subscriber got %q, want %q", when, got, want)
		}
	}

	publish("t/secret", "1")
	expect("no ACL", "1")
	restore := tb.SetPolicy(ruled)
	publish("t/secret", "2")
	publish("t/public", "3")
	expect("an ACL that refuses t/secret", "3")
	restore()
	publish("t/secret", "4")
	expect("the old policy back", "4")
}
