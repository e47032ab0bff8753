package caddymqtt

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// TestBrokerBeforeStart: a door can serve, and so start the broker, before
// the mqtt app's Start (Caddy starts apps in no set order, and layer4
// listens first more often than not). That broker must already apply this
// config's policy: it was created with an empty one, which refused every
// client ("not authorised") until Start swapped the policy in, so devices
// reconnecting right after a restart were turned away.
func TestBrokerBeforeStart(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	app := &App{AllowAnonymous: true}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	b, err := app.Broker()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Policy().Authenticate(&broker.Client{ID: "early", Door: broker.DoorTCP}, nil); err != nil {
		t.Fatalf("a client before Start: %v, want accepted (allow_anonymous)", err)
	}
}

// TestNoBrokerAfterDestruct: once the last config using the broker is
// unloaded, a door of that config still asking for it (a connection
// accepted just before) gets ErrClosed, not the broker being shut down and
// not a new one nothing would shut down.
func TestNoBrokerAfterDestruct(t *testing.T) {
	s := &sharedBroker{}
	b, err := s.get(broker.AnonymousPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := s.get(broker.AnonymousPolicy{}); again != b {
		t.Fatal("a second get returned another broker")
	}
	if err := s.Destruct(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.get(broker.AnonymousPolicy{}); err != broker.ErrClosed || got != nil {
		t.Fatalf("get after Destruct: %v, %v; want nil, ErrClosed", got, err)
	}
}
