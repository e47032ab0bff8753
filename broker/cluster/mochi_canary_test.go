package cluster_test

import (
	"log/slog"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestMochiCanaryInjectedRetain: on a bare mochi server, a publish injected
// through an inline client with the retain flag is also stored as the
// topic's retained message (broker/MOCHI.md row 21). The cluster clears the
// flag on what it injects, so that the retained-message bucket alone sets
// retained messages from other nodes.
func TestMochiCanaryInjectedRetain(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl := srv.NewClient(nil, mqtt.LocalListener, "injector", true)
	err := srv.InjectPacket(cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
		TopicName:   "canary/retain", Payload: []byte("x"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.Topics.Retained.Get("canary/retain"); !ok {
		t.Fatal("mochi no longer retains an injected publish: the cluster's OnPublish need not clear the flag")
	}
}

// TestMochiCanarySelectSubscribersOnlyWithShared: mochi asks the
// OnSelectSubscribers hook only when a shared subscription matches, and
// picks a member itself when the hook selects none (MOCHI.md row 21): the
// cluster hook empties Shared to leave the choice to NATS.
func TestMochiCanarySelectSubscribersOnlyWithShared(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	h := &countSelect{}
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_ = srv.Publish("canary/plain", []byte("x"), false, 0)
	if h.n != 0 {
		t.Fatal("mochi now calls OnSelectSubscribers without shared subscribers")
	}
	srv.Topics.Subscribe("member", packets.Subscription{Filter: "$share/g/canary/#"})
	_ = srv.Publish("canary/shared", []byte("x"), false, 0)
	if h.n != 1 {
		t.Fatalf("OnSelectSubscribers called %d times with a shared subscriber, want 1", h.n)
	}
}

type countSelect struct {
	mqtt.HookBase
	n int
}

func (h *countSelect) ID() string           { return "canary-select" }
func (h *countSelect) Provides(b byte) bool { return b == mqtt.OnSelectSubscribers }
func (h *countSelect) OnSelectSubscribers(s *mqtt.Subscribers, _ packets.Packet) *mqtt.Subscribers {
	h.n++
	return s
}
