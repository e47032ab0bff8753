package broker

import (
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Retained messages for a new subscription.
//
// mochi writes every retained message matching a new subscription at once,
// from the subscriber's read loop, into its write buffer, and drops what
// does not fit: a wildcard subscription over 5,000 retained topics got a
// few thousand of them in random order (QoS 0), or exactly as many as the
// queue holds (QoS 1), while the client read as fast as it could.
//
// retainedHook takes that over: it tells mochi that the client asked for no
// retained messages (Retain Handling 2) and, once the SUBACK is written,
// sends them itself from a goroutine of the connection's, in topic order,
// each when the connection's queues have room (see backpressure.go), so a
// client that reads gets all of them, through the same flow control as
// live messages. It applies what mochi would: Retain Handling 0/1
// [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11], the retain flag set
// [MQTT-3.3.1-8], QoS at most the subscription's [MQTT-3.8.4-8], the
// subscription identifier [MQTT-3.3.4-3], expiry [MQTT-3.3.2-5], the read
// ACL, and nothing for shared subscriptions (MQTT 5 §4.8.2).
type retainedHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *retainedHook) ID() string { return "caddy-mqtt-retained" }

func (h *retainedHook) Provides(b byte) bool {
	return b == mqtt.OnSubscribe || b == mqtt.OnSubscribed || b == mqtt.OnPacketProcessed
}

// feedState is a connection's retained-message delivery.
type feedState struct {
	asked   []packets.Subscription // this SUBSCRIBE's, with the client's Retain Handling; read loop only
	existed []bool                 // whether the client held each filter already

	mu      sync.Mutex
	pending []packets.Subscription // waiting for delivery, in SUBSCRIBE order
	running bool                   // a goroutine delivers them
}

// OnSubscribe notes what the client asked for and asks mochi for nothing.
func (h *retainedHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return pk
	}
	cc.feed.asked = slices.Clone(pk.Filters)
	cc.feed.existed = make([]bool, len(pk.Filters))
	filters := slices.Clone(pk.Filters)
	for i := range filters {
		_, cc.feed.existed[i] = cl.State.Subscriptions.Get(filters[i].Filter)
		filters[i].RetainHandling = 2
	}
	pk.Filters = filters
	return pk
}

// OnSubscribed keeps the granted subscriptions that want retained messages.
func (h *retainedHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, codes []byte) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	var want []packets.Subscription
	for i, sub := range cc.feed.asked {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code || mqtt.IsSharedFilter(sub.Filter) ||
			sub.RetainHandling == 2 || (sub.RetainHandling == 1 && cc.feed.existed[i]) {
			continue
		}
		sub.Qos = min(sub.Qos, codes[i])
		want = append(want, sub)
	}
	cc.feed.asked, cc.feed.existed = want, nil
}

// OnPacketProcessed starts the delivery once mochi has written the SUBACK.
func (h *retainedHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Subscribe {
		return
	}
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	want := cc.feed.asked
	cc.feed.asked, cc.feed.existed = nil, nil
	if err != nil || len(want) == 0 || h.b.srv.Topics.Retained.Len() == 0 {
		return
	}
	// One goroutine per connection at a time, taking the subscriptions in
	// SUBSCRIBE order; the read loop never waits for it (it reads the
	// acknowledgements the delivery waits for).
	cc.feed.mu.Lock()
	defer cc.feed.mu.Unlock()
	cc.feed.pending = append(cc.feed.pending, want...)
	if !cc.feed.running {
		cc.feed.running = true
		go h.run(cl, cc)
	}
}

// run delivers what is pending until nothing is, or the connection is gone.
func (h *retainedHook) run(cl *mqtt.Client, cc *clientConn) {
	for {
		cc.feed.mu.Lock()
		if len(cc.feed.pending) == 0 || cl.Closed() {
			cc.feed.pending, cc.feed.running = nil, false
			cc.feed.mu.Unlock()
			return
		}
		sub := cc.feed.pending[0]
		cc.feed.pending = cc.feed.pending[1:]
		cc.feed.mu.Unlock()
		h.feed(cl, cc, sub)
	}
}

// feed sends the retained messages matching sub, until the connection is
// gone. It waits for room as long as the client is connected: a client
// that reads slowly slows only its own delivery.
func (h *retainedHook) feed(cl *mqtt.Client, cc *clientConn, sub packets.Subscription) {
	msgs := h.b.srv.Topics.Messages(sub.Filter)
	slices.SortFunc(msgs, func(a, b packets.Packet) int { return strings.Compare(a.TopicName, b.TopicName) })
	for _, m := range msgs {
		if cl.Closed() {
			return
		}
		c := cc.client.Load()
		if c == nil || !cc.mayRead(c, m.TopicName) {
			continue
		}
		expiry := m.Expiry
		if wp, _, will, ok := packedWill(&m); will {
			// A will's expiry travels packed (will.go); mochi's is the
			// time a delayed will was due.
			expiry = 0
			if ok {
				expiry = willExpiry(&m, &wp, h.b.srv.Options.Capabilities.MaximumMessageExpiryInterval)
			}
		}
		if expiry > 0 && expiry <= time.Now().Unix() {
			continue
		}
		out := m.Copy(false)
		out.FixedHeader.Retain = true
		out.FixedHeader.Qos = min(m.FixedHeader.Qos, sub.Qos)
		if sub.Identifier > 0 {
			out.Properties.SubscriptionIdentifier = []int{sub.Identifier}
		}
		cc.awaitRoomPatiently()
		if out.FixedHeader.Qos > 0 {
			if ok, _ := h.b.track(cl, cc, &out, true); !ok {
				continue
			}
		}
		if err := cl.WritePacket(out); err != nil {
			return
		}
	}
}
