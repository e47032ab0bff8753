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
	onlyHookFor(t, mqtt.OnPacketEncode, "caddy-mqtt-encode")
}

// TestOneHookReads: the same for the packets mochi reads (read.go).
func TestOneHookReads(t *testing.T) {
	onlyHookFor(t, mqtt.OnPacketRead, "caddy-mqtt-read")
}

// onlyHookFor checks that the hook with id is the only one of a broker's
// hooks that provides event.
func onlyHookFor(t *testing.T, event byte, id string) {
	t.Helper()
	b := newBroker(t, Options{Storage: Storage{Kind: StorageBolt, Path: filepath.Join(t.TempDir(), "mqtt.db")}}, AnonymousPolicy{Allow: true})
	var providing []string
	for _, h := range mochiHooks(b.srv).GetAll() {
		if h.Provides(event) {
			providing = append(providing, h.ID())
		}
	}
	if fmt.Sprint(providing) != "["+id+"]" {
		t.Fatalf("hooks providing event %d: %v, want only %s", event, providing, id)
	}
}

// mochiHooks is srv's hook list, which mochi does not export; tests only
// read it.
func mochiHooks(srv *mqtt.Server) *mqtt.Hooks {
	field := reflect.ValueOf(srv).Elem().FieldByName("hooks")
	return (*mqtt.Hooks)(unsafe.Pointer(field.Pointer()))
}
