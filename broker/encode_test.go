package broker

import (
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// TestOneHookEncodes: in a broker (with storage, so every hook is there),
// encodeHook is the only hook that takes mochi's OnPacketEncode; each other
// one would cost two copies of the 800-byte packet for every packet written.
func TestOneHookEncodes(t *testing.T) {
	b := newBroker(t, Options{Storage: Storage{Kind: StorageBolt, Path: filepath.Join(t.TempDir(), "mqtt.db")}}, AnonymousPolicy{Allow: true})
	var encoding []string
	for _, h := range mochiHooks(b.srv).GetAll() {
		if h.Provides(mqtt.OnPacketEncode) {
			encoding = append(encoding, h.ID())
		}
	}
	if fmt.Sprint(encoding) != "[caddy-mqtt-encode]" {
		t.Fatalf("hooks providing OnPacketEncode: %v, want only encodeHook", encoding)
	}
}

// TestOneHookReads: the same for the packets mochi reads (read.go).
func TestOneHookReads(t *testing.T) {
	b := newBroker(t, Options{Storage: Storage{Kind: StorageBolt, Path: filepath.Join(t.TempDir(), "mqtt.db")}}, AnonymousPolicy{Allow: true})
	var reading []string
	for _, h := range mochiHooks(b.srv).GetAll() {
		if h.Provides(mqtt.OnPacketRead) {
			reading = append(reading, h.ID())
		}
	}
	if fmt.Sprint(reading) != "[caddy-mqtt-read]" {
		t.Fatalf("hooks providing OnPacketRead: %v, want only readHook", reading)
	}
}

// mochiHooks is srv's hook list, which mochi does not export; tests only
// read it.
func mochiHooks(srv *mqtt.Server) *mqtt.Hooks {
	field := reflect.ValueOf(srv).Elem().FieldByName("hooks")
	return (*mqtt.Hooks)(unsafe.Pointer(field.Pointer()))
}
