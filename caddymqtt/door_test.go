package caddymqtt

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

func TestDoorOptionsCaddyfile(t *testing.T) {
	h := new(Handler)
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`mqtt {
		allow_anonymous false
		max_connections 10
		max_packet_size 16KiB
		max_inflight_messages 1
		max_queued_messages 50
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.DoorOptions.Validate(); err != nil {
		t.Fatal(err)
	}
	want := broker.DoorLimits{MaxConnections: 10, MaxPacketSize: 16 << 10, MaxInflightMessages: 1, MaxQueuedMessages: 50}
	if got := h.ConnInfo(broker.DoorWS).Limits; got != want {
		t.Fatalf("limits %+v, want %+v", got, want)
	}

	for _, c := range []struct{ input, wantErr string }{
		{"mqtt {\n\tmax_inflight_messages\n}", "Testfile:2"},
		{"mqtt {\n\tmax_queued_messages lots\n}", "Testfile:2"},
		{"mqtt {\n\tmax_inflight_messages -1\n}", "want a whole number from 0 to 65535, got '-1', at Testfile:2"},
		{"mqtt {\n\tmax_queued_messages 65536\n}", "want a whole number from 0 to 65535, got '65536', at Testfile:2"},
	} {
		h := new(Handler)
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
		if err == nil {
			err = h.DoorOptions.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%q: error %v, want it to contain %q", c.input, err, c.wantErr)
		}
	}

	// Out of range is refused when the Caddyfile is read, naming the line
	// (it used to wrap to 16 bits); JSON configs are checked by Validate.
	if _, err := parseGlobal(t, "mqtt {\n\tmax_inflight_messages 5\n\tmax_queued_messages 100000\n}"); err == nil ||
		!strings.Contains(err.Error(), "got '100000', at Testfile:3") {
		t.Fatalf("global max_queued_messages 100000: %v", err)
	}
	if err := (&App{MaxQueuedMessages: 100000}).Validate(); err == nil || !strings.Contains(err.Error(), "max_queued_messages 100000 out of range") {
		t.Fatalf("JSON max_queued_messages 100000: %v", err)
	}
}

func TestDoorAuthFilesCaddyfile(t *testing.T) {
	h := new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mqtt {\n\tpassword_file /etc/mqtt/devices.passwd\n\tacl_file devices.acl\n}")); err != nil {
		t.Fatal(err)
	}
	if h.PasswordFile != "/etc/mqtt/devices.passwd" || h.ACLFile != "devices.acl" {
		t.Fatalf("got %q, %q", h.PasswordFile, h.ACLFile)
	}
	for _, in := range []string{"mqtt {\n\tpassword_file\n}", "mqtt {\n\tacl_file a b\n}"} {
		if err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil || !strings.Contains(err.Error(), "Testfile:2") {
			t.Errorf("%q: error %v, want one at Testfile:2", in, err)
		}
	}
}

func TestDoorNameCaddyfile(t *testing.T) {
	h := new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mqtt {\n\tname plant-a.ws_1\n}")); err != nil {
		t.Fatal(err)
	}
	if err := h.DoorOptions.Validate(); err != nil {
		t.Fatal(err)
	}
	if info := h.ConnInfo(broker.DoorWS); info.Name != "plant-a.ws_1" || info.Label() != "plant-a.ws_1" || info.Door != broker.DoorWS {
		t.Fatalf("conn info %+v", info)
	}
	if l := new(Handler).ConnInfo(broker.DoorWSS).Label(); l != "wss" {
		t.Fatalf("unnamed door labelled %q", l)
	}
	for _, in := range []string{"mqtt {\n\tname\n}", "mqtt {\n\tname a b\n}", "mqtt {\n\tname \"a\\\"b\"\n}", "mqtt {\n\tname " + strings.Repeat("x", 65) + "\n}"} {
		if err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil || !strings.Contains(err.Error(), "Testfile:2") {
			t.Errorf("%q: error %v, want one at Testfile:2", in, err)
		}
	}
	if err := (DoorOptions{Name: "a{b}"}).Validate(); err == nil {
		t.Error("a JSON name with braces was accepted")
	}
}
