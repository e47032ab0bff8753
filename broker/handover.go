package broker

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Messages caught in a session's handover.
//
// When a connection resumes a session, mochi (inheritClientSession) copies
// the old client's queue into the new client, clears the old one, and only
// then registers the new client under the client id. A publisher that looked
// the id up before that (publishToSubscribers) still queues its message in
// the old client: between the copy and the registration it is cleared with
// the old queue or left in it, and lost either way, although its publisher
// got a PUBACK (MOCHI.md row 32). With publishers busy while devices
// reconnect this lost hundreds of messages per thousand reconnects.
//
// handoverHook marks the old client when a connection that resumes its
// session is established (OnSessionEstablish, before mochi copies anything).
// Every QoS 1/2 message mochi then queues in the marked client is taken out
// of it and queued for the new client instead: held until the new client is
// registered, then numbered and written like any message mochi sends it.
// Order: a message caught this way can arrive after messages published
// later (at least once, as for any resend).
type handoverHook struct {
	mqtt.HookBase
	b *Broker

	mu  sync.Mutex
	old map[*mqtt.Client]*handover // marked old clients

	// marked holds the keys of old, for caught and for OnQosPublish, which
	// every QoS 1/2 message to any client passes: a broker-wide lock there
	// made all publishers wait for each other.
	marked sync.Map

	stopped    bool           // Stop has begun: opened delivers in its caller
	delivering sync.WaitGroup // opened's deliveries after a CONNACK
}

// handover is one session's move from an old client to its successor.
type handover struct {
	to      *mqtt.Client
	since   time.Time
	pending []packets.Packet // caught before the successor was registered
	open    bool             // the successor is registered: deliver at once
}

// registered reports whether mochi has registered ho's successor under the
// client id, which it does after copying the old client's queue into it.
func (h *handoverHook) registered(ho *handover) bool {
	cur, ok := h.b.srv.Clients.Get(ho.to.ID)
	return ok && cur == ho.to
}

// handoverGrace is how long an old client stays marked once its successor
// is registered: a publisher that looked the client id up just before may
// still be on its way (waiting for room in the old connection, say).
const handoverGrace = time.Minute

func (h *handoverHook) ID() string { return "caddy-mqtt-handover" }

func (h *handoverHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnQosPublish:
		return true
	}
	return false
}

// caught reports whether cl is a session's old client, whose messages go to
// its successor (storage.go does not write them under the old client).
func (h *handoverHook) caught(cl *mqtt.Client) bool {
	_, ok := h.marked.Load(cl)
	return ok
}

// OnSessionEstablish runs after sessionHook has decided whether the new
// connection resumes the session, and before mochi copies it.
func (h *handoverHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok || sessionStart(cc.resume.Load()) != sessionResumed {
		return // nothing handed over, or discarded (session.go)
	}
	existing, ok := h.b.srv.Clients.Get(cl.ID)
	if !ok || existing == cl {
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.old == nil {
		h.old = make(map[*mqtt.Client]*handover)
	}
	for c, ho := range h.old {
		if ho.open && now.Sub(ho.since) > handoverGrace {
			delete(h.old, c)
			h.marked.Delete(c)
		}
	}
	h.old[existing] = &handover{to: cl, since: now}
	h.marked.Store(existing, true)
}

// encode: when mochi encodes a successor's CONNACK, it has
// registered it. What is written now goes out after the CONNACK (writer.go).
// mochi may fail the connection after this (its resend of the queue) without
// calling OnSessionEstablished or OnDisconnect.
func (h *handoverHook) encode(cl *mqtt.Client, _ *packets.Packet) {
	h.opened(cl)
}

// OnSessionEstablished and OnDisconnect: in case a successor was registered
// without a CONNACK being encoded (its connection closed first).
func (h *handoverHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.opened(cl) }

func (h *handoverHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.opened(cl) }

// opened delivers what was caught for the successor cl. Not in the caller:
// with storage each message waits for the disk, and with publishers busy
// hundreds are caught, which held the successor's CONNACK back for seconds
// (the goroutine's writes before the CONNACK wait for it, writer.go).
func (h *handoverHook) opened(cl *mqtt.Client) {
	var pending []packets.Packet
	h.mu.Lock()
	for _, ho := range h.old {
		if ho.to == cl && !ho.open {
			ho.open, ho.since = true, time.Now()
			pending = append(pending, ho.pending...)
			ho.pending = nil
		}
	}
	if len(pending) == 0 {
		h.mu.Unlock()
		return
	}
	inCaller := h.stopped
	if !inCaller {
		h.delivering.Add(1)
	}
	h.mu.Unlock()
	deliverAll := func() {
		for _, pk := range pending {
			h.deliver(cl, pk)
		}
	}
	if inCaller {
		deliverAll()
		return
	}
	go func() {
		defer h.delivering.Done()
		deliverAll()
	}()
}

// Stop waits for opened's deliveries, which store what they deliver: mochi
// stops the hooks in the order they were added, and this one was added
// before the storage hook (broker.go).
func (h *handoverHook) Stop() error {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	h.delivering.Wait()
	return nil
}

// OnQosPublish takes a message mochi has just queued in a marked client out
// of it and delivers it to the successor.
func (h *handoverHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
		return // a resend of the client's own queue
	}
	// Unmarked clients without the lock. OnSessionEstablish marks a client
	// before mochi copies its queue, and the copy and the queueing of pk
	// (before this call) take the queue's lock: if pk was queued first, it
	// was copied with the queue; if the copy came first, the mark is seen.
	if !h.caught(cl) {
		return
	}
	h.mu.Lock()
	ho := h.old[cl]
	if ho == nil {
		h.mu.Unlock()
		return
	}
	if cl.State.Inflight.Delete(pk.PacketID) {
		atomic.AddInt64(&h.b.srv.Info.Inflight, -1)
	}
	to := ho.to
	if !ho.open {
		ho.pending = append(ho.pending, pk)
		h.mu.Unlock()
		if h.registered(ho) {
			h.opened(to)
		}
		return
	}
	h.mu.Unlock()
	h.deliver(to, pk)
}

// deliver queues pk for cl and writes it, as mochi does for the messages it
// publishes to a client. A successor that has itself been handed over
// passes the message on. The message is queued under h.mu: a handover of cl
// begins (OnSessionEstablish) either before, and the message follows it, or
// after, and mochi copies the message with the rest of cl's queue.
func (h *handoverHook) deliver(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	for ho := h.old[cl]; ho != nil; ho = h.old[cl] {
		if !ho.open {
			ho.pending = append(ho.pending, pk)
			h.mu.Unlock()
			return
		}
		cl = ho.to
	}
	cc, _ := cl.Net.Conn.(*clientConn)
	if cc == nil {
		h.mu.Unlock()
		return
	}
	// The ACL in force now, as for the rest of a resumed queue (session.go).
	if c := cc.client.Load(); c == nil || !h.b.Policy().Authorize(c, pk.TopicName, AccessRead) {
		h.mu.Unlock()
		return
	}
	out := pk.Copy(false)
	queued, added := h.b.track(cl, cc, &out, false)
	h.mu.Unlock()
	if !queued {
		h.b.log.Warn("mqtt session handover: no packet identifier left, message dropped", "client", cl.ID, "topic", pk.TopicName)
		return
	}
	if added {
		// After h.mu: every QoS 1/2 publish to a handed-over client takes
		// it, and this waits for the disk. Before the write: no
		// acknowledgement can delete the record before it exists.
		h.b.storeTracked(cl, out)
	}
	if cl.Closed() {
		return // queued for the next connection
	}
	awaitWriteSlot(cl)
	_ = cl.WritePacket(out)
}
