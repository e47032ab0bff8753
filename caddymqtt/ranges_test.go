package caddymqtt

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestNumbersOutOfRangeFail: every numeric option is range-checked when the
// Caddyfile is read, and the error names the line (max_inflight_messages
// 70000 used to become 4464, a 16-bit wrap).
func TestNumbersOutOfRangeFail(t *testing.T) {
	for _, opt := range []string{
		"max_inflight_messages 70000",
		"max_queued_messages 65536",
		"max_keepalive 65536",
		"topic_alias_maximum 70000",
		"max_connections 99999999999",
		"max_subscriptions -1",
		"max_packet_size 300MiB",
		"connect_timeout -5s",
	} {
		input := "mqtt {\n\tallow_anonymous\n\t" + opt + "\n}"
		err := new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil {
			t.Errorf("global %q accepted", opt)
		} else if !strings.Contains(err.Error(), "Testfile:3") {
			t.Errorf("global %q: error %q does not name line 3", opt, err)
		}
	}
	for _, opt := range []string{"max_inflight_messages 70000", "max_queued_messages 70000", "max_keepalive 70000", "max_connections 99999999999"} {
		input := "mqtt {\n\tallow_anonymous\n\t" + opt + "\n}"
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), "Testfile:3") {
			t.Errorf("door %q: error %v, want one naming line 3", opt, err)
		}
	}
	// The largest values are accepted.
	input := "mqtt {\n\tmax_inflight_messages 65535\n\tmax_queued_messages 65535\n\tmax_keepalive 65535\n\ttopic_alias_maximum 0\n}"
	a := new(App)
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if o := a.brokerOptions(); o.MaxInflightMessages != 65535 || o.MaxKeepalive != 65535 || o.TopicAliasMaximum != -1 {
		t.Fatalf("broker options %+v", o)
	}
}
