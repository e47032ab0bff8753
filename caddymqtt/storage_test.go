package caddymqtt

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

func TestStorageCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     broker.Storage
		parseErr string
	}{
		{in: "", want: broker.Storage{}},
		{in: "storage memory", want: broker.Storage{}},
		{in: "storage bolt", want: broker.Storage{Kind: "bolt", Path: filepath.Join(caddy.AppDataDir(), "mqtt", "broker.bolt")}},
		{in: "storage bolt state/mqtt.db", want: broker.Storage{Kind: "bolt", Path: filepath.Join(caddy.AppDataDir(), "state", "mqtt.db")}},
		{in: "storage bolt /var/lib/mqtt.db {\n\t\tlock_timeout 1s\n\t}", want: broker.Storage{Kind: "bolt", Path: "/var/lib/mqtt.db", LockTimeout: 1e9}},
		{in: "storage", parseErr: "wrong argument count"},
		{in: "storage badger", parseErr: `unknown storage kind "badger" (supported: memory, bolt)`},
		{in: "storage bolt a b", parseErr: "wrong argument count"},
		{in: "storage bolt {\n\t\tsync false\n\t}", parseErr: "unknown storage option"},
	} {
		var a App
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mqtt {\n\t" + tc.in + "\n}"))
		if tc.parseErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.parseErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if err := a.Validate(); err != nil {
			t.Errorf("%q: validate: %v", tc.in, err)
		}
		if got := a.Storage.brokerStorage(); got != tc.want {
			t.Errorf("%q: storage %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
