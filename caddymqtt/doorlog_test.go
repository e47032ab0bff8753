package caddymqtt

import (
	"net"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// TestNoteDoorOncePerAddress: the first connection on each door and local
// address is logged, later ones are not.
func TestNoteDoorOncePerAddress(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	logger := zap.New(core)
	// Documentation addresses (RFC 5737): no other test notes them.
	a := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1883}
	b := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 8883}
	notes := []struct {
		door broker.Door
		addr net.Addr
	}{
		{broker.DoorTCP, a}, {broker.DoorTCP, a}, {broker.DoorTCP, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1883}},
		{broker.DoorTCP, b}, {broker.DoorTLS, a}, {broker.DoorTLS, a},
		{broker.DoorTCP, &net.UnixAddr{Name: t.Name(), Net: "unix"}}, {broker.DoorTCP, &net.UnixAddr{Name: t.Name(), Net: "unix"}},
	}
	// What is noted is noted for the process: forget these, for -count.
	for _, n := range notes {
		servedDoors.Delete(keyOf(n.door, n.addr))
	}
	for _, n := range notes {
		NoteDoor(logger, n.door, n.addr)
	}
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.ContextMap()["door"].(string)+" "+e.ContextMap()["listen"].(string))
	}
	want := []string{"tcp " + a.String(), "tcp " + b.String(), "tls " + a.String(), "tcp " + t.Name()}
	if len(got) != len(want) {
		t.Fatalf("logged %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logged %q, want %q", got, want)
		}
	}
}
