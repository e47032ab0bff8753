package broker

import "sync/atomic"

// AnyTopicReader is implemented by policies that can tell, once for a
// client, that it may read every topic (no ACL applies to it). Deliveries to
// such a client are then not checked topic by topic.
//
// It matters for fan-out: mochi checks every delivery on the publisher's
// read loop, one subscriber after the other, so a publish to 1,000
// subscribers asked the policy 1,000 times on one goroutine, and that loop
// is what bounds the rate.
type AnyTopicReader interface {
	// ReadsAnyTopic reports whether Authorize(c, topic, AccessRead) is true
	// for every topic a message can be published on.
	ReadsAnyTopic(c *Client) bool
}

// readGate is a connection's memo of ReadsAnyTopic: for which policy (the
// box SetPolicy installed) and which Client it was asked, and the answer. A
// reload installs a new box, so the next delivery asks again.
type readGate struct {
	memo atomic.Pointer[readMemo]
}

type readMemo struct {
	policy *policyBox
	client *Client
	any    bool
}

// mayRead reports whether the policy in force lets c, the client of cc,
// read topic.
func (cc *clientConn) mayRead(c *Client, topic string) bool {
	box := cc.broker.policy.Load()
	m := cc.reads.memo.Load()
	if m == nil || m.policy != box || m.client != c {
		m = &readMemo{policy: box, client: c}
		if r, ok := box.Policy.(AnyTopicReader); ok {
			m.any = r.ReadsAnyTopic(c)
		}
		cc.reads.memo.Store(m)
	}
	return m.any || box.Authorize(c, topic, AccessRead)
}
