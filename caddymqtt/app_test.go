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
