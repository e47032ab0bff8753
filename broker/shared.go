package broker

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// sharedHook chooses the member of each shared subscription group that
// gets a message [MQTT-4.8.2]. mochi takes the first member of a Go map,
// which is neither random nor even (3 members, 3,000 messages: 1,519 / 757 /
// 724), and may choose a member whose ACL refuses the topic or that is
// offline, so the group loses the message. Here members take turns
// (round-robin in client id order, as mosquitto), skipping members the
// policy does not let read the topic and preferring connected ones; a
// message no member may read is counted in $SYS/broker/messages/dropped
// and logged.
type sharedHook struct {
	mqtt.HookBase
	b *Broker

	mu    sync.Mutex
	turns map[string]uint64 // group filter -> messages given out so far
}

func newSharedHook(b *Broker) *sharedHook {
	return &sharedHook{b: b, turns: make(map[string]uint64)}
}

func (h *sharedHook) ID() string { return "caddy-mqtt-shared-subscriptions" }

func (h *sharedHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSelectSubscribers, mqtt.OnUnsubscribed:
		return true
	}
	return false
}

func (h *sharedHook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	selected := make(map[string]packets.Subscription, len(subs.Shared))
	for group, members := range subs.Shared {
		ids := make([]string, 0, len(members))
		for id := range members {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		h.mu.Lock()
		turn := h.turns[group]
		h.turns[group] = turn + 1
		h.mu.Unlock()
		pick := ""
		fallback := ""
		for i := range ids {
			id := ids[(int(turn%uint64(len(ids)))+i)%len(ids)]
			cl, ok := h.b.srv.Clients.Get(id)
			if !ok || !h.b.mayRead(cl, pk.TopicName) {
				continue
			}
			if !cl.Closed() {
				pick = id
				break
			}
			if fallback == "" {
				fallback = id // an offline persistent session queues it
			}
		}
		if pick == "" {
			pick = fallback
		}
		if pick == "" {
			atomic.AddInt64(&h.b.srv.Info.MessagesDropped, 1)
			if h.b.refusals.allow("shared\x00"+group, time.Now()) {
				h.b.log.Warn("mqtt shared subscription: no member may read the topic, message dropped",
					"group", group, "topic", pk.TopicName)
			}
			continue
		}
		sub := members[pick]
		if prev, ok := selected[pick]; ok {
			sub = prev.Merge(sub)
		}
		selected[pick] = sub
	}
	if len(selected) == 0 {
		// mochi picks a member itself when the selection is empty: give
		// it a group with no members instead.
		subs.Shared = nil
	}
	subs.SharedSelected = selected
	return subs
}

// OnUnsubscribed forgets the turn counter of a group that may be gone, so
// that the map does not grow with every group ever used. A group that is
// still there starts again from its first member.
func (h *sharedHook) OnUnsubscribed(_ *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	for _, f := range pk.Filters {
		delete(h.turns, f.Filter)
	}
	h.mu.Unlock()
}

// mayRead reports whether the policy lets cl read topic, as dispatchHook's
// delivery check does (without counting a full offline queue, which the
// delivery itself does).
func (b *Broker) mayRead(cl *mqtt.Client, topic string) bool {
	if cl.Net.Inline {
		return true
	}
	cc, live := cl.Net.Conn.(*clientConn)
	if !live {
		c := &Client{ID: cl.ID, Username: string(cl.Properties.Username), AuthKey: b.doorKeys.get(cl.ID)}
		return b.Policy().Authorize(c, topic, AccessRead)
	}
	c := cc.client.Load()
	return c != nil && cc.mayRead(c, topic)
}
