package broker

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// subscribing is what the hook knows about the SUBSCRIBE a client's read
// loop is processing: mochi calls OnSubscribe, then OnACLCheck for each
// filter, then OnSubscribed, all on that loop. It tells the ACL check for
// a subscription from the one for a delivery (mochi passes both as a
// read), and which filters are over max_subscriptions.
type subscribing struct {
	mu      sync.Mutex
	filters map[string]bool // filter -> refused for the subscription limit
}

func (s *subscribing) begin(filters map[string]bool) {
	s.mu.Lock()
	s.filters = filters
	s.mu.Unlock()
}

// lookup reports whether filter belongs to the SUBSCRIBE being processed,
// and whether it is refused by the limit.
func (s *subscribing) lookup(filter string) (subscribing, refused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refused, subscribing = s.filters[filter]
	return subscribing, refused
}

// OnSubscribe notes the filters of a SUBSCRIBE and which of them would take
// the client over max_subscriptions; a filter it already has replaces its
// old subscription and does not count.
func (h *dispatchHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return pk
	}
	max := h.b.opts.MaxSubscriptions
	held := cl.State.Subscriptions.Len()
	filters := make(map[string]bool, len(pk.Filters))
	for _, sub := range pk.Filters {
		if _, dup := filters[sub.Filter]; dup {
			continue
		}
		_, has := cl.State.Subscriptions.Get(sub.Filter)
		refused := max > 0 && !has && held >= max
		if !has && !refused {
			held++
		}
		filters[sub.Filter] = refused
	}
	cc.subscribing.begin(filters)
	return pk
}

// OnSubscribed ends the SUBSCRIBE noted by OnSubscribe.
func (h *dispatchHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.subscribing.begin(nil)
	}
}
