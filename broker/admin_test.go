package broker

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

func persistentConnect(t *testing.T, addr, id string, clean bool) (*paho.Client, *paho.Connack) {
	t.Helper()
	c, ca, err := pahoLoginWith(t, addr, func(cp *paho.Connect) {
		cp.ClientID, cp.CleanStart = id, clean
		exp := uint32(300)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, ca
}

// TestLoggedSessionPresentMatchesConnack: the connect log line's
// session_present is the CONNACK's (session.go records it as the CONNACK is
// encoded).
func TestLoggedSessionPresentMatchesConnack(t *testing.T) {
	var logs syncBuf
	b := newBroker(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, AnonymousPolicy{Allow: true})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP})
	for i, clean := range []bool{false, false, true, false} {
		c, ca := persistentConnect(t, addr, "canary", clean)
		want := `"session_present":false`
		if ca.SessionPresent {
			want = `"session_present":true`
		}
		waitFor(t, func() bool { return strings.Count(logs.String(), `"msg":"mqtt client connected"`) == i+1 })
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		var last string
		for _, l := range lines {
			if strings.Contains(l, `"msg":"mqtt client connected"`) {
				last = l
			}
		}
		if !strings.Contains(last, want) {
			t.Fatalf("connect %d (clean %v): CONNACK session present %v, logged %s", i, clean, ca.SessionPresent, last)
		}
		if i == 1 && !ca.SessionPresent {
			t.Fatal("a resumed session should be present")
		}
		_ = c.Disconnect(&paho.Disconnect{})
		waitFor(t, func() bool { return strings.Count(logs.String(), `"msg":"mqtt client disconnected"`) == i+1 })
	}
}

// TestCanaryKickDiscardDropsSession: mochi has no call to drop a stored
// session; Kick(discard) does what its expiry does, plus unsubscribing
// (which its expiry leaves to the topic index). Afterwards the session is
// gone from mochi's client list, its filters from the topic index and
// $SYS subscription count, and a reconnect finds no session.
func TestCanaryKickDiscardDropsSession(t *testing.T) {
	b := newBroker(t, Options{Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP})
	c, _ := persistentConnect(t, addr, "doomed", true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "doom/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	before := atomic.LoadInt64(&b.Server().Info.Subscriptions)
	if err := b.Kick(ctx, "doomed", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { ci, err := b.Client("doomed"); return err == nil && !ci.Connected })
	if err := b.Kick(ctx, "doomed", false); err != ErrNotConnected {
		t.Fatalf("kicking a disconnected session: %v", err)
	}
	if err := b.Kick(ctx, "doomed", true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client("doomed"); err != ErrUnknownClient {
		t.Fatalf("after discard: %v", err)
	}
	if subs := b.Server().Topics.Subscribers("doom/x"); len(subs.Subscriptions) != 0 {
		t.Fatalf("subscribers left: %v", subs.Subscriptions)
	}
	if after := atomic.LoadInt64(&b.Server().Info.Subscriptions); after != before-1 {
		t.Fatalf("$SYS subscriptions %d, want %d", after, before-1)
	}
	_, ca := persistentConnect(t, addr, "doomed", false)
	if ca.SessionPresent {
		t.Fatal("the discarded session came back")
	}
	if err := b.Kick(ctx, "nobody", false); err != ErrUnknownClient {
		t.Fatalf("unknown client: %v", err)
	}
}
