package broker

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestAnonymousConnectsNotBoundedLikePasswordChecks: the bounds on password
// checks (authslots.go) allow GOMAXPROCS/2 CONNECTs per address at once,
// one on two cores; an anonymous policy checks no password, so a burst of
// anonymous CONNECTs from one address must not be refused "server busy"
// (0x03 to MQTT 3.1.1) while another from that address is being checked.
func TestAnonymousConnectsNotBoundedLikePasswordChecks(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	// Another CONNECT from 127.0.0.1 is in its password check, as many
	// as the address may have.
	key := hostKey("127.0.0.1")
	for range b.auth.perAddr {
		if !b.auth.enter(key) {
			t.Fatal("gate full before the test")
		}
		defer b.auth.leave(key)
	}
	_, pk := dialRawConnect(t, addr, 4, packets.ConnectParams{Clean: true, Keepalive: 60, ClientIdentifier: "anon-burst"}, packets.Properties{})
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("got %v return code %#x, want CONNACK 0", pk.FixedHeader.Type, pk.ReasonCode)
	}
}
