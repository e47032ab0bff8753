package broker

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// usersPolicy accepts the users it lists with their passwords, and lets
// everyone read and write everything but $SYS.
type usersPolicy map[string]string

func (p usersPolicy) Authenticate(c *Client, password []byte) error {
	if want, ok := p[c.Username]; ok && want == string(password) {
		return nil
	}
	return ErrNotAuthorized
}

func (usersPolicy) Authorize(_ *Client, topic string, access Access) bool {
	return !(access == AccessPublish && IsSysTopic(topic))
}

func login(id, user, password string, clean bool) packets.ConnectParams {
	return packets.ConnectParams{
		ClientIdentifier: id, Clean: clean, Keepalive: 60,
		Username: []byte(user), UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true,
	}
}

var sessionHour = packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true}

// offlineWith subscribes a persistent MQTT 3.1.1 session, leaves, and
// waits until mochi has noted it gone.
func offlineWith(t *testing.T, b *Broker, addr string, cp packets.ConnectParams, filter string, qos byte) {
	t.Helper()
	c, ack := dialRawConnect(t, addr, 4, cp, packets.Properties{})
	if ack.ReasonCode != 0 {
		t.Fatalf("connect: %#x", ack.ReasonCode)
	}
	c.subscribe(filter, qos)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitFor(t, func() bool {
		cl, ok := b.Server().Clients.Get(cp.ClientIdentifier)
		return ok && cl.Closed()
	})
}

// TestSessionNotResumedByAnotherUser: alice's persistent session has 10
// QoS 1 messages queued; bob connects with alice's client id: he gets
// Session Present 0 and none of alice's messages, and does not inherit her
// subscription. Before the fix bob got all 10 and her subscription.
func TestSessionNotResumedByAnotherUser(t *testing.T) {
	b := newBroker(t, Options{}, usersPolicy{"alice": "a-pass", "bob": "b-pass"})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP})
	offlineWith(t, b, addr, login("shared-id", "alice", "a-pass", false), "alice/inbox", 1)
	publishN(t, b, "alice/inbox", 1, 0, 9)

	bob, ack := dialRawConnect(t, addr, 4, login("shared-id", "bob", "b-pass", false), packets.Properties{})
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("bob's CONNACK: reason %#x, session present %v; want 0, false", ack.ReasonCode, ack.SessionPresent)
	}
	if got := bob.publishes(quiet); len(got) != 0 {
		t.Fatalf("bob got %d of alice's queued messages: %s", len(got), payloads(got))
	}
	publishN(t, b, "alice/inbox", 1, 10, 10)
	if got := bob.publishes(quiet); len(got) != 0 {
		t.Fatalf("bob inherited alice's subscription: got %s", payloads(got))
	}
	bob.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})

	// alice's session is gone (bob's connection replaced it, as any
	// takeover does); she starts anew and is told so.
	alice, ack := dialRawConnect(t, addr, 4, login("shared-id", "alice", "a-pass", false), packets.Properties{})
	if ack.SessionPresent {
		t.Fatal("alice's session came back after bob discarded it")
	}
	if got := alice.publishes(quiet); len(got) != 0 {
		t.Fatalf("alice got %s", payloads(got))
	}
}

// TestSessionResumedBySameUser: the same user gets the queue back.
func TestSessionResumedBySameUser(t *testing.T) {
	b := newBroker(t, Options{}, usersPolicy{"alice": "a-pass"})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP})
	offlineWith(t, b, addr, login("alice-1", "alice", "a-pass", false), "alice/inbox", 1)
	publishN(t, b, "alice/inbox", 1, 0, 4)
	alice, ack := dialRawConnect(t, addr, 4, login("alice-1", "alice", "a-pass", false), packets.Properties{})
	if !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	if got := payloads(alice.drain(alice.publishes(quiet), 20)); got != "[0 1 2 3 4]" {
		t.Fatalf("got %s", got)
	}
}

// TestResubscribeWhileQueueResent: a persistent subscriber with 200 QoS 1
// messages queued reconnects and subscribes again at once with packet
// identifier 1, as mosquitto_sub does: the SUBSCRIBE is granted and all 200
// arrive. Before the fix the SUBSCRIBE collided with queued message 1
// (0x80 in MQTT 3.1.1, "identifier in use") and mosquitto_sub exited after
// the first window.
func TestResubscribeWhileQueueResent(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	sub := dialRaw(t, addr, 4, "resub", false, packets.Properties{})
	sub.subscribe("resub/t", 1)
	sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitFor(t, func() bool { cl, ok := b.Server().Clients.Get("resub"); return ok && cl.Closed() })
	publishN(t, b, "resub/t", 1, 0, 199)

	sub = dialRaw(t, addr, 4, "resub", false, packets.Properties{})
	sub.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "resub/t", Qos: 1}},
	})
	var pending []packets.Packet
	granted := false
	for !granted {
		pk := sub.read(2 * time.Second)
		switch pk.FixedHeader.Type {
		case packets.Suback:
			if pk.PacketID != 1 || len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] != 1 {
				t.Fatalf("SUBACK id %d codes %v, want id 1 granted QoS 1", pk.PacketID, pk.ReasonCodes)
			}
			granted = true
		case packets.Publish:
			pending = append(pending, pk)
		default:
			t.Fatalf("got %v", pk.FixedHeader.Type)
		}
	}
	pending = append(pending, sub.publishes(quiet)...)
	all := sub.drain(pending, 20)
	if len(all) != 200 {
		t.Fatalf("got %d of 200", len(all))
	}
	for i, pk := range all {
		if string(pk.Payload) != strconv.Itoa(i) {
			t.Fatalf("message %d is %s", i, pk.Payload)
		}
	}
}

// TestOwnPublishKeepsQueuedMessage: a client's own QoS 1 publish that uses
// the packet identifier of a message the broker has in flight to it no
// longer makes the broker forget that message: it is resent after a
// reconnect.
func TestOwnPublishKeepsQueuedMessage(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	sub := dialRaw(t, addr, 4, "own", false, packets.Properties{})
	sub.subscribe("own/in", 1)
	publishN(t, b, "own/in", 1, 0, 0)
	first := sub.read(2 * time.Second)
	if first.FixedHeader.Type != packets.Publish {
		t.Fatalf("got %v", first.FixedHeader.Type)
	}
	// Not acknowledged; the client publishes with the same identifier.
	sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: first.PacketID, TopicName: "own/out", Payload: []byte("x")})
	if pk := sub.read(2 * time.Second); pk.FixedHeader.Type != packets.Puback || pk.PacketID != first.PacketID {
		t.Fatalf("got %v id %d, want PUBACK %d", pk.FixedHeader.Type, pk.PacketID, first.PacketID)
	}
	sub.conn.Close()
	waitFor(t, func() bool { cl, ok := b.Server().Clients.Get("own"); return ok && cl.Closed() })
	sub = dialRaw(t, addr, 4, "own", false, packets.Properties{})
	got := sub.publishes(quiet)
	if len(got) != 1 || string(got[0].Payload) != "0" || !got[0].FixedHeader.Dup {
		t.Fatalf("after reconnect: %s (dup %v), want [0] resent with DUP 1", payloads(got), len(got) == 1 && got[0].FixedHeader.Dup)
	}
}

// TestQueuedFirstDeliveryNotDup: messages queued while a persistent session
// was offline go out with DUP 0 on MQTT 3.1.1 and 5; one that was sent and
// not acknowledged before the disconnect goes out again with DUP 1
// [MQTT-3.3.1-1].
func TestQueuedFirstDeliveryNotDup(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprint(version), func(t *testing.T) {
			b, addr := newDoorBroker(t, DoorLimits{})
			id := fmt.Sprintf("dup-%d", version)
			sub := dialRaw(t, addr, version, id, false, sessionHour)
			sub.subscribe("dup/t", 1)
			publishN(t, b, "dup/t", 1, 0, 0)
			if pk := sub.read(2 * time.Second); pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
				t.Fatalf("live message: %v dup %v", pk.FixedHeader.Type, pk.FixedHeader.Dup)
			}
			sub.conn.Close() // message 0 unacknowledged
			waitFor(t, func() bool { cl, ok := b.Server().Clients.Get(id); return ok && cl.Closed() })
			publishN(t, b, "dup/t", 1, 1, 3)
			sub = dialRaw(t, addr, version, id, false, sessionHour)
			got := sub.publishes(quiet)
			if payloads(got) != "[0 1 2 3]" {
				t.Fatalf("got %s", payloads(got))
			}
			for i, pk := range got {
				if want := i == 0; pk.FixedHeader.Dup != want {
					t.Errorf("message %s: DUP %v, want %v", pk.Payload, pk.FixedHeader.Dup, want)
				}
			}
		})
	}
}

// TestQoS2ResendAfterReconnect: an MQTT 5 client's QoS 2 publish got its
// PUBREC; the client reconnects before sending PUBREL, gets the PUBREC
// again, and sends the PUBLISH again (DUP): the answer is PUBREC 0x00, not
// 0x91 [MQTT-4.3.3-9]; PUBREL completes it; the same identifier then works
// for a new message; the subscriber gets each message exactly once. Before
// the fix the re-send got 0x91 and every later publish with that
// identifier did too.
func TestQoS2ResendAfterReconnect(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	sub := dialRaw(t, addr, 5, "q2-sub", true, packets.Properties{})
	sub.subscribe("q2/t", 0)

	pub := dialRaw(t, addr, 5, "q2-pub", false, sessionHour)
	publish := func(c *rawClient, payload string, dup bool) packets.Packet {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: dup}, PacketID: 7, TopicName: "q2/t", Payload: []byte(payload)})
		return c.read(2 * time.Second)
	}
	if pk := publish(pub, "one", false); pk.FixedHeader.Type != packets.Pubrec || pk.ReasonCode != 0 || pk.PacketID != 7 {
		t.Fatalf("PUBREC: %v reason %#x id %d", pk.FixedHeader.Type, pk.ReasonCode, pk.PacketID)
	}
	pub.conn.Close()
	waitFor(t, func() bool { cl, ok := b.Server().Clients.Get("q2-pub"); return ok && cl.Closed() })

	pub = dialRaw(t, addr, 5, "q2-pub", false, sessionHour)
	if pk := pub.read(2 * time.Second); pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != 7 {
		t.Fatalf("resumed session: %v id %d, want the PUBREC 7 again", pk.FixedHeader.Type, pk.PacketID)
	}
	if pk := publish(pub, "one", true); pk.FixedHeader.Type != packets.Pubrec || pk.ReasonCode != 0 || pk.PacketID != 7 {
		t.Fatalf("re-send: %v reason %#x id %d, want PUBREC 0x00 7", pk.FixedHeader.Type, pk.ReasonCode, pk.PacketID)
	}
	pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7})
	if pk := pub.read(2 * time.Second); pk.FixedHeader.Type != packets.Pubcomp || pk.PacketID != 7 || pk.ReasonCode != 0 {
		t.Fatalf("PUBCOMP: %v id %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
	}
	if pk := publish(pub, "two", false); pk.FixedHeader.Type != packets.Pubrec || pk.ReasonCode != 0 {
		t.Fatalf("new message with id 7: %v reason %#x", pk.FixedHeader.Type, pk.ReasonCode)
	}
	pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7})
	if pk := pub.read(2 * time.Second); pk.FixedHeader.Type != packets.Pubcomp {
		t.Fatalf("got %v", pk.FixedHeader.Type)
	}
	if got := payloads(sub.publishes(quiet)); got != "[one two]" {
		t.Fatalf("subscriber got %s, want [one two]", got)
	}
}

// TestCleanStartRace: a session with expiry 0 ends with its connection; a
// reconnect with Clean Start 0 right after the DISCONNECT must not find it
// (Session Present 0) nor its subscription [MQTT-3.1.2-23]. Before the fix
// 8 of 20 such reconnects resumed it.
func TestCleanStartRace(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	for i := range 20 {
		c := dialRaw(t, addr, 5, "race", true, packets.Properties{})
		c.subscribe("race/t", 0)
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		c2, ack := dialRawConnect(t, addr, 5, packets.ConnectParams{ClientIdentifier: "race", Keepalive: 60},
			packets.Properties{SessionExpiryInterval: 300, SessionExpiryIntervalFlag: true})
		if ack.ReasonCode != 0 || ack.SessionPresent {
			t.Fatalf("run %d: reason %#x, session present %v; want a new session", i, ack.ReasonCode, ack.SessionPresent)
		}
		publishN(t, b, "race/t", 0, i, i)
		if got := c2.publishes(50 * time.Millisecond); len(got) != 0 {
			t.Fatalf("run %d: the ended session's subscription delivered %s", i, payloads(got))
		}
		// Start the next run with no session.
		c2.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		c3, _ := dialRawConnect(t, addr, 5, packets.ConnectParams{ClientIdentifier: "race", Clean: true, Keepalive: 60}, packets.Properties{})
		c3.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		waitFor(t, func() bool { _, ok := b.Server().Clients.Get("race"); return !ok })
	}
}

// TestManyUnreleasedQoS2FromMQTT3: an MQTT 3.1.1 publisher with 1,100 QoS 2
// messages not yet released gets a PUBREC for each and stays connected
// (MQTT 3 has no Receive Maximum); mochi closed the connection after 1,024.
func TestManyUnreleasedQoS2FromMQTT3(t *testing.T) {
	_, addr := newDoorBroker(t, DoorLimits{})
	c := dialRaw(t, addr, 4, "many-q2", true, packets.Properties{})
	for i := 1; i <= 1100; i++ {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: uint16(i), TopicName: "many/t", Payload: []byte("x")})
	}
	for i := 1; i <= 1100; i++ {
		pk := c.read(2 * time.Second)
		if pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != uint16(i) {
			t.Fatalf("publish %d: got %v id %d", i, pk.FixedHeader.Type, pk.PacketID)
		}
	}
	for i := 1; i <= 1100; i++ {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: uint16(i)})
	}
	for i := 1; i <= 1100; i++ {
		if pk := c.read(2 * time.Second); pk.FixedHeader.Type != packets.Pubcomp || pk.PacketID != uint16(i) {
			t.Fatalf("release %d: got %v id %d", i, pk.FixedHeader.Type, pk.PacketID)
		}
	}
}

// TestRetainedBurst: 5,000 retained QoS 0 messages (2,000 QoS 1 ones, each
// acknowledged one at a time) reach a wildcard subscriber of that QoS that
// reads, all of them, in topic order.
func TestRetainedBurst(t *testing.T) {
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprint(qos), func(t *testing.T) {
			b, addr := newDoorBroker(t, DoorLimits{})
			n := 5000
			if qos == 1 {
				n = 2000
			}
			for i := range n {
				if err := b.Server().Publish(fmt.Sprintf("st/%05d", i), []byte(strconv.Itoa(i)), true, qos); err != nil {
					t.Fatal(err)
				}
			}
			sub := dialRaw(t, addr, 4, "retained", true, packets.Properties{})
			sub.subscribe("st/#", qos)
			first := sub.read(5 * time.Second)
			if first.FixedHeader.Type != packets.Publish {
				t.Fatalf("got %v, want the first retained message", first.FixedHeader.Type)
			}
			got := append([]packets.Packet{first}, sub.publishes(quiet)...)
			if qos == 1 {
				got = sub.drain(got, 20)
			}
			if len(got) != n {
				t.Fatalf("got %d of %d", len(got), n)
			}
			for i, pk := range got {
				if pk.TopicName != fmt.Sprintf("st/%05d", i) || !pk.FixedHeader.Retain {
					t.Fatalf("message %d: %s retain %v", i, pk.TopicName, pk.FixedHeader.Retain)
				}
			}
		})
	}
}

// TestQoS0BurstToReader: 5,000 QoS 0 messages of 100 bytes published as
// fast as the broker takes them all reach a subscriber that reads. Before
// backpressure, 3,626-5,000 arrived.
func TestQoS0BurstToReader(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	sub := dialRaw(t, addr, 4, "burst0", true, packets.Properties{})
	sub.subscribe("burst0/t", 0)
	payload := make([]byte, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5000 {
			if err := b.Server().Publish("burst0/t", payload, false, 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	first := sub.read(5 * time.Second)
	got := 1 + len(sub.publishes(quiet))
	<-done
	if first.FixedHeader.Type != packets.Publish || got != 5000 {
		t.Fatalf("got %d of 5000", got)
	}
}

// TestResumedSessionNewReceiveMaximum: an MQTT 5 session made with Receive
// Maximum 10 is resumed with Receive Maximum 2: its queue comes through a
// window of 2 [MQTT-3.3.4-9].
func TestResumedSessionNewReceiveMaximum(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{})
	props := sessionHour
	props.ReceiveMaximum = 10
	sub := dialRaw(t, addr, 5, "rm-resume", false, props)
	sub.subscribe("rm/t", 1)
	sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitFor(t, func() bool { cl, ok := b.Server().Clients.Get("rm-resume"); return ok && cl.Closed() })
	publishN(t, b, "rm/t", 1, 0, 9)
	props.ReceiveMaximum = 2
	sub = dialRaw(t, addr, 5, "rm-resume", false, props)
	if got := payloads(sub.drain(sub.publishes(quiet), 2)); got != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("got %s", got)
	}
}

// TestClientOverReceiveMaximum: an MQTT 5 client that has more unreleased
// QoS 2 publishes than the broker's Receive Maximum (advertised in the
// CONNACK) is disconnected with 0x93 [MQTT-3.3.4-8].
func TestClientOverReceiveMaximum(t *testing.T) {
	b := newBroker(t, Options{ReceiveMaximum: 3}, AnonymousPolicy{Allow: true})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP})
	c, ack := dialRawConnect(t, addr, 5, packets.ConnectParams{ClientIdentifier: "over-rm", Clean: true, Keepalive: 60}, packets.Properties{})
	if ack.Properties.ReceiveMaximum != 3 {
		t.Fatalf("CONNACK Receive Maximum %d, want 3", ack.Properties.ReceiveMaximum)
	}
	for i := 1; i <= 4; i++ {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: uint16(i), TopicName: "rm/over", Payload: []byte("x")})
	}
	for i := 1; i <= 3; i++ {
		if pk := c.read(2 * time.Second); pk.FixedHeader.Type != packets.Pubrec {
			t.Fatalf("publish %d: %v", i, pk.FixedHeader.Type)
		}
	}
	if pk := c.read(2 * time.Second); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrReceiveMaximum.Code {
		t.Fatalf("got %v reason %#x, want DISCONNECT 0x93", pk.FixedHeader.Type, pk.ReasonCode)
	}
}
