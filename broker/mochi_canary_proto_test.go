package broker

import (
	"bytes"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Canaries for the protocol workarounds (acks.go, publishcheck.go,
// keepalive.go, will.go); see mochi_canary_test.go and MOCHI.md.

// Canary for acks.go: mochi answers a QoS 1 PUBLISH that has a user
// property with reason code 0x01 and the property echoed back.
func TestMochiCanaryPubackGrantedQoS(t *testing.T) {
	_, addr := bareMochi(t, nil)
	w := dialWire(t, addr)
	w.connect(5, "canary-puback", 30, packets.Properties{})
	pk := publishPk(1, 1, "canary/puback", "x")
	pk.Properties.User = []packets.UserProperty{{Key: "k", Val: "v"}}
	w.packet(pk)
	w.expect("PUBACK", "40 0b 00 01 01 07 26 00 01 6b 00 01 76")
}

// Canary for publishcheck.go: mochi leaves a QoS 1 PUBLISH to $SYS
// unanswered, and answers a wildcard topic with 0x82.
func TestMochiCanarySysAndWildcardPublish(t *testing.T) {
	_, addr := bareMochi(t, nil)
	w := dialWire(t, addr)
	w.connect(4, "canary-sys", 30, packets.Properties{})
	w.packet(publishPk(1, 1, "$SYS/x", "x"))
	if got := w.next(500 * time.Millisecond); got != nil {
		t.Fatalf("mochi answered a $SYS publish: % x", got)
	}
	w5 := dialWire(t, addr)
	w5.connect(5, "canary-wild", 30, packets.Properties{})
	w5.packet(publishPk(1, 1, "a/+", "x"))
	if got := w5.next(3 * time.Second); len(got) < 3 || got[0] != 0xe0 || got[2] != 0x82 {
		t.Fatalf("wildcard publish: got % x, want mochi's DISCONNECT 0x82", got)
	}
}

// Canary for acks.go: mochi's CONNACK advertises neither Topic Alias
// Maximum (clients must then assume 0 although it accepts 65535) nor the
// Maximum Packet Size it enforces.
func TestMochiCanaryConnackLimits(t *testing.T) {
	_, addr := bareMochi(t, withCapabilities(func(c *mqtt.Capabilities) { c.MaximumPacketSize = 1024 }))
	w := dialWire(t, addr)
	ack := decodeConnack(t, w.connect(5, "canary-connack", 30, packets.Properties{}))
	if ack.Properties.TopicAliasMaximum != 0 || ack.Properties.MaximumPacketSize != 0 {
		t.Fatalf("mochi's CONNACK now advertises %+v", ack.Properties)
	}
}

// Canary for keepalive.go: mochi's keepalive deadline is 1.5 × keep alive
// rounded down to whole seconds (1 s for keep alive 1), and it closes
// without DISCONNECT 0x8D.
func TestMochiCanaryKeepaliveWholeSeconds(t *testing.T) {
	_, addr := bareMochi(t, nil)
	w := dialWire(t, addr)
	w.connect(5, "canary-ka", 1, packets.Properties{})
	start := time.Now()
	got := w.next(5 * time.Second)
	if d := time.Since(start); got != nil || d > 1400*time.Millisecond {
		t.Fatalf("mochi now keeps a keep alive 1 client %v (got % x)", d, got)
	}
}

// Canary for keepalive.go (readFailed): mochi closes an MQTT 5 connection
// whose packet is over its Maximum Packet Size without a DISCONNECT.
func TestMochiCanaryTooLargeNoDisconnect(t *testing.T) {
	_, addr := bareMochi(t, withCapabilities(func(c *mqtt.Capabilities) { c.MaximumPacketSize = 1024 }))
	w := dialWire(t, addr)
	w.connect(5, "canary-big", 30, packets.Properties{})
	w.packet(publishPk(1, 1, "canary/big", string(bytes.Repeat([]byte("x"), 2048))))
	if got := w.next(3 * time.Second); got != nil {
		t.Fatalf("mochi now answers a packet over its size: % x", got)
	}
}

// Canary for will.go: of a will's properties mochi delivers only the user
// properties.
func TestMochiCanaryWillPropertiesDropped(t *testing.T) {
	_, addr := bareMochi(t, nil)
	sub := dialWire(t, addr)
	sub.connect(5, "canary-will-sub", 30, packets.Properties{})
	sub.packet(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "canary/will"}}})
	sub.next(3 * time.Second) // SUBACK
	w := dialWire(t, addr)
	w.v = 5
	w.packet(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "canary-will",
			WillFlag: true, WillTopic: "canary/will", WillPayload: []byte("gone"),
			WillProperties: packets.Properties{ContentType: "text/plain"}},
	})
	w.next(3 * time.Second) // CONNACK
	w.conn.Close()
	got := sub.next(3 * time.Second)
	if got == nil || got[0]>>4 != packets.Publish {
		t.Fatalf("no will delivered: % x", got)
	}
	if bytes.Contains(got, []byte("text/plain")) {
		t.Fatal("mochi now keeps the will's content type")
	}
}

// Canary for readcheck.go: mochi closes an MQTT 5 connection whose packet
// it cannot decode without a DISCONNECT.
func TestMochiCanaryMalformedNoDisconnect(t *testing.T) {
	_, addr := bareMochi(t, nil)
	w := dialWire(t, addr)
	w.connect(5, "canary-malformed", 30, packets.Properties{})
	w.hex("32 05 00 09 61 00 01")
	if got := w.next(3 * time.Second); got != nil {
		t.Fatalf("mochi now answers a malformed packet: % x", got)
	}
}

// Canary for will.go (willExpiry): mochi gives a delayed will the time it
// is due as its expiry, so a delayed will with no Message Expiry Interval
// reaches a subscriber with Message Expiry Interval 1.
func TestMochiCanaryDelayedWillExpiry(t *testing.T) {
	_, addr := bareMochi(t, nil)
	sub := dialWire(t, addr)
	sub.connect(5, "canary-dwill-sub", 30, packets.Properties{})
	sub.packet(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "canary/dwill"}}})
	sub.next(3 * time.Second) // SUBACK
	w := dialWire(t, addr)
	w.v = 5
	w.packet(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Properties:  packets.Properties{SessionExpiryInterval: 60, SessionExpiryIntervalFlag: true},
		Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "canary-dwill",
			WillFlag: true, WillTopic: "canary/dwill", WillPayload: []byte("gone"),
			WillProperties: packets.Properties{WillDelayInterval: 1}},
	})
	w.next(3 * time.Second) // CONNACK
	w.conn.Close()
	// QoS 0, Message Expiry Interval 1.
	sub.expect("delayed will", "30 18 00 0c 63 61 6e 61 72 79 2f 64 77 69 6c 6c 05 02 00 00 00 01 67 6f 6e 65")
}
