package broker

import (
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// subscribing is what the hook knows about the SUBSCRIBE a client's read
// loop is processing: mochi calls OnSubscribe, then OnACLCheck for each valid
// filter, then OnSubscribed, all on that loop. It tells the ACL check for a
// subscription from the one for a delivery (mochi passes both as a read),
// and counts the client's subscriptions against max_subscriptions.
type subscribing struct {
	// active is set while a SUBSCRIBE is processed, so that the check of
	// every delivery (has) takes no lock the rest of the time.
	active  atomic.Bool
	mu      sync.Mutex
	filters map[string]bool // filter of this SUBSCRIBE -> not held yet
	held    int             // subscriptions held, counting those granted so far
	max     int             // 0: no limit
}

func (s *subscribing) begin(filters map[string]bool, held, max int) {
	s.mu.Lock()
	s.filters, s.held, s.max = filters, held, max
	s.active.Store(filters != nil)
	s.mu.Unlock()
}

// has reports whether filter belongs to the SUBSCRIBE being processed.
func (s *subscribing) has(filter string) bool {
	if !s.active.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.filters[filter]
	return ok
}

// grant counts a filter the policy allowed, reporting false when it would
// take the client over max_subscriptions. A filter the client holds already
// replaces its old subscription and does not count.
func (s *subscribing) grant(filter string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	isNew, ok := s.filters[filter]
	if !ok || !isNew {
		return true
	}
	if s.max > 0 && s.held >= s.max {
		return false
	}
	s.held++
	s.filters[filter] = false // a repeated filter in one SUBSCRIBE counts once
	return true
}

// OnSubscribe notes the filters of a SUBSCRIBE and which of them the client
// does not hold yet.
func (h *dispatchHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return pk
	}
	filters := make(map[string]bool, len(pk.Filters))
	for _, sub := range pk.Filters {
		_, has := cl.State.Subscriptions.Get(sub.Filter)
		filters[sub.Filter] = !has
	}
	cc.subscribing.begin(filters, cl.State.Subscriptions.Len(), h.b.opts.MaxSubscriptions)
	return pk
}

// OnSubscribed ends the SUBSCRIBE noted by OnSubscribe.
func (h *dispatchHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.subscribing.begin(nil, 0, 0)
	}
}
