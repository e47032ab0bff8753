package broker

import (
	"bytes"
	"math"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Outgoing flow control: mosquitto's max_inflight_messages and
// max_queued_messages, per connection, and the MQTT 5 client's Receive
// Maximum.
//
// At most window QoS 1/2 PUBLISH packets are written to a client without
// their acknowledgement (PUBACK; PUBCOMP or an error PUBREC for QoS 2). Later
// ones wait, in order, in the connection's queue, at most queueMax of them;
// a QoS 1/2 message that finds the queue full is dropped, like mosquitto does.
// QoS 0 messages and acknowledgements are never held; a QoS 0 message is
// dropped when as many packets already wait to be written (writer.go).
//
// mochi has a send quota of its own for the Receive Maximum, but it cannot be
// set per door, and it loses track of what it held back: a held message it
// sends later is deleted from the client's in-flight store, so the client's
// acknowledgement no longer restores the quota (after Receive Maximum such
// messages a client gets nothing more) and the message is not resent after
// a reconnect. flowHook switches mochi's quota off at CONNECT; the window is
// kept here, below mochi, on the bytes mochi writes, and mochi's in-flight
// store still holds every QoS 1/2 message, sent or queued, so a reconnect
// resends all of them (through the window again).
type outFlow struct {
	window   int // QoS 1/2 publishes written and not yet acknowledged, at most
	queueMax int // QoS 1/2 publishes waiting for the window, at most
	writeMax int // packets waiting to be written before QoS 0 ones are dropped

	inflight map[uint16]struct{} // written, not yet acknowledged
	sent     *sentIDs            // the same, kept with the session
	queue    []queuedPublish     // waiting, oldest first, from head on
	head     int
	queued   map[uint16]struct{} // packet identifiers in queue[head:]
	partial  []byte              // the start of a packet split across writes
	// lender is the pooled buffer of publishEncoder that the bytes being
	// filtered are, one PUBLISH (encodepublish.go); filter takes it (and
	// clears lender) when it queues that publish in it rather than a copy.
	lender *bytes.Buffer
}

// flowState is a connection's outgoing flow control, set up at CONNECT and
// guarded by the connection's wmu.
type flowState struct {
	flow  *outFlow
	mochi *mqtt.Client
}

// queuedPublish is an encoded PUBLISH waiting for the window.
type queuedPublish struct {
	id  uint16
	b   []byte
	buf *bytes.Buffer // the pooled buffer b is in, or nil
}

func newOutFlow(window, queueMax int, sent *sentIDs) *outFlow {
	if sent == nil {
		sent = new(sentIDs)
	}
	return &outFlow{window: window, queueMax: queueMax, writeMax: queueMax, sent: sent}
}

// sentIDs are the identifiers of a session's QoS 1/2 messages that were
// written to the client and not acknowledged. They outlive the connection,
// so that a resumed session resends those with DUP 1 and sends the ones the
// client never saw with DUP 0 [MQTT-3.3.1-1] (mochi marks every one of them
// DUP). After a restart nothing is known of them: all go out with DUP 0.
type sentIDs struct {
	mu sync.Mutex
	m  map[uint16]struct{}
}

func (s *sentIDs) add(id uint16) {
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[uint16]struct{})
	}
	s.m[id] = struct{}{}
	s.mu.Unlock()
}

func (s *sentIDs) remove(id uint16) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

func (s *sentIDs) has(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[id]
	return ok
}

// queueLen is the number of publishes waiting.
func (f *outFlow) queueLen() int { return len(f.queue) - f.head }

// filter takes bytes mochi writes to the client and returns those to pass
// on now and how many packets they hold. QoS 1/2 publishes that do not fit
// the window are kept back, and the identifiers of those that do not fit
// the queue either are returned in dropped. A QoS 0 publish is dropped when
// waiting packets, those already waiting to be written included, reach
// writeMax (max_queued_messages: mosquitto's rule for QoS 0: sent at once unless the client's
// outgoing packets fill max_queued_messages); dropped0 counts those. The
// result aliases p when nothing is kept back or dropped.
func (f *outFlow) filter(p []byte, waiting int) (out []byte, n int, dropped []uint16, dropped0 int) {
	lent := f.lender
	if len(f.partial) > 0 {
		p = append(f.partial, p...)
		f.partial = nil
		lent = nil
	}
	// run: the start of the bytes not yet copied to out; it stays 0 until
	// a packet is held back or dropped, and p passes whole.
	pos, run := 0, 0
	for pos < len(p) {
		size, id, qos, ok := nextPacket(p[pos:])
		if !ok {
			break
		}
		pass := true
		switch {
		case isPlaceholder(p[pos]):
			pass = false // one whose packet is gone (encodepublish.go)
		case qos:
			if !f.admit(id) {
				pass = false
				switch {
				case f.queueLen() >= f.queueMax:
					dropped = append(dropped, id)
				case lent != nil && size == len(p):
					f.enqueue(id, p, lent) // in its pooled buffer
					f.lender = nil
				default:
					f.enqueue(id, bytes.Clone(p[pos:pos+size]), nil)
				}
			}
		case p[pos]>>4 == packets.Publish && waiting+n >= f.writeMax:
			pass = false
			dropped0++
		}
		if pass {
			n++
		} else {
			// What passes is copied together, allocated only if there
			// is any (a publish held back alone leaves nothing).
			if pos > run && out == nil {
				out = make([]byte, 0, len(p)-size)
			}
			out = append(out, p[run:pos]...)
			run = pos + size
		}
		pos += size
	}
	if pos < len(p) {
		f.partial = bytes.Clone(p[pos:])
	}
	if run == 0 {
		return p[:pos], n, dropped, dropped0
	}
	return append(out, p[run:pos]...), n, dropped, dropped0
}

// admit reports whether the QoS 1/2 publish id may be written now, and
// counts it in flight if so.
func (f *outFlow) admit(id uint16) bool {
	if _, ok := f.queued[id]; ok {
		// mochi reuses an identifier only once the message that had it is
		// gone from its store (expired): the queued copy is stale.
		f.unqueue(id)
	}
	if _, ok := f.inflight[id]; ok {
		return true
	}
	if f.queueLen() > 0 || len(f.inflight) >= f.window {
		return false
	}
	if f.inflight == nil {
		f.inflight = make(map[uint16]struct{}, min(f.window, 64))
	}
	f.inflight[id] = struct{}{}
	f.sent.add(id)
	return true
}

func (f *outFlow) enqueue(id uint16, b []byte, buf *bytes.Buffer) {
	if f.queued == nil {
		f.queued = make(map[uint16]struct{})
	}
	f.queued[id] = struct{}{}
	f.queue = append(f.queue, queuedPublish{id: id, b: b, buf: buf})
}

func (f *outFlow) unqueue(id uint16) {
	if _, ok := f.queued[id]; !ok {
		return
	}
	delete(f.queued, id)
	for i := f.head; i < len(f.queue); i++ {
		if f.queue[i].id == id {
			if buf := f.queue[i].buf; buf != nil {
				putEncodeBuffer(buf)
			}
			f.queue = append(f.queue[:i], f.queue[i+1:]...)
			return
		}
	}
}

// ack ends the flow of publish id and passes the queued publishes that now
// fit the window to emit, oldest first.
func (f *outFlow) ack(id uint16, emit func(b []byte, buf *bytes.Buffer)) {
	if _, ok := f.inflight[id]; !ok {
		return
	}
	delete(f.inflight, id)
	f.sent.remove(id)
	for len(f.inflight) < f.window && f.queueLen() > 0 {
		q := f.queue[f.head]
		f.queue[f.head] = queuedPublish{}
		f.head++
		delete(f.queued, q.id)
		f.inflight[q.id] = struct{}{}
		f.sent.add(q.id)
		emit(q.b, q.buf)
	}
	if f.head == len(f.queue) {
		f.queue, f.head = f.queue[:0], 0
	} else if f.head > 1024 && f.head > len(f.queue)/2 {
		f.queue = append(f.queue[:0], f.queue[f.head:]...)
		f.head = 0
	}
}

// nextPacket reads the packet at the start of b: its length, and whether it
// is a QoS 1/2 PUBLISH with its packet identifier. ok is false while b holds
// less than a whole packet.
func nextPacket(b []byte) (n int, id uint16, qos bool, ok bool) {
	length, lenBytes := 0, 0
	for shift := 0; ; shift += 7 {
		if 1+lenBytes >= len(b) || lenBytes == 4 {
			return 0, 0, false, false
		}
		v := b[1+lenBytes]
		lenBytes++
		length |= int(v&0x7f) << shift
		if v&0x80 == 0 {
			break
		}
	}
	header := 1 + lenBytes
	n = header + length
	if len(b) < n {
		return 0, 0, false, false
	}
	if b[0]>>4 != packets.Publish || (b[0]>>1)&3 == 0 {
		return n, 0, false, true
	}
	// Topic name (two-byte length, then the name), then the identifier.
	if length < 4 {
		return n, 0, false, true // malformed; mochi never writes this
	}
	at := header + 2 + (int(b[header])<<8 | int(b[header+1]))
	if at+2 > n {
		return n, 0, false, true
	}
	return n, uint16(b[at])<<8 | uint16(b[at+1]), true, true
}

// flowHook sets up each connection's outgoing flow control and feeds it the
// client's acknowledgements.
type flowHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *flowHook) ID() string { return "caddy-mqtt-flow" }

func (h *flowHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnQosDropped
}

// OnConnect sizes the window, min(the door's max_inflight_messages, the
// client's Receive Maximum), and turns mochi's own send quota off: with a
// zero maximum mochi writes every message at once. The Receive Maximum is
// cleared in the client's properties too, because mochi sets its quota from
// it again when it hands a resumed session to this connection.
func (h *flowHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return nil
	}
	window := cc.inflightLimit(h.b)
	if rm := int(pk.Properties.ReceiveMaximum); pk.ProtocolVersion == 5 && rm > 0 {
		window = min(window, rm)
	}
	cc.setFlow(cl, newOutFlow(window, cc.queueLimit(h.b), cc.sent))
	cl.Properties.Props.ReceiveMaximum = 0
	cl.State.Inflight.ResetSendQuota(0)
	if pk.ProtocolVersion < 5 {
		// MQTT 3 has no Receive Maximum: mochi applied its MQTT 5 one
		// (1024 unreleased QoS 2 publishes) and closed the connection of
		// a client that had more, without a word. Like mosquitto, take
		// as many as there are packet identifiers.
		cl.State.Inflight.ResetReceiveQuota(math.MaxUint16)
	}
	// No outgoing topic aliases: mochi names a topic once and then sends
	// only its alias, which holds only while packets go out in the order
	// mochi made them. QoS 0 messages overtake queued ones and full queues
	// drop messages, so a client could get an alias it was never told.
	cl.Properties.Props.TopicAliasMaximum = 0
	return nil
}

// read passes the acknowledgements of the broker's publishes to the window
// (called by readHook, read.go, for PUBACK, PUBCOMP and PUBREC): PUBACK,
// PUBCOMP, and a PUBREC with an error reason, which ends a QoS 2 flow in
// MQTT 5.
func (h *flowHook) read(cl *mqtt.Client, pk *packets.Packet) {
	// As mochi's processPubrec: an error or unknown reason ends the flow.
	if pk.FixedHeader.Type == packets.Pubrec && pk.ReasonCode < packets.ErrUnspecifiedError.Code && pk.ReasonCodeValid() {
		return
	}
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		// A failed write closes the connection; mochi's next read sees it.
		_ = cc.acked(pk.PacketID)
	}
}

// OnQosDropped forgets a queued message mochi dropped from its store
// because it expired (it names such a message with its PUBLISH packet; the
// other calls are about acknowledgements).
func (h *flowHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.wmu.Lock()
		if cc.flow != nil {
			cc.flow.unqueue(pk.PacketID)
		}
		cc.wmu.Unlock()
	}
}

// inflightLimit is the door's max_inflight_messages, else the broker's.
func (c *clientConn) inflightLimit(b *Broker) int {
	if n := c.info.Limits.MaxInflightMessages; n > 0 {
		return n
	}
	return int(b.opts.MaxInflightMessages)
}

// queueLimit is the number of QoS 1/2 messages the connection's client may
// have waiting: the door's max_queued_messages, else the broker's.
func (c *clientConn) queueLimit(b *Broker) int {
	if n := c.info.Limits.MaxQueuedMessages; n > 0 {
		return n
	}
	return int(b.opts.MaxQueuedMessages)
}

func (c *clientConn) setFlow(cl *mqtt.Client, f *outFlow) {
	c.wmu.Lock()
	c.flow, c.mochi = f, cl
	c.room.progress = time.Now()
	c.wmu.Unlock()
}

// send passes p, less what flow control keeps back or drops, to the
// writer. Called with wmu held.
func (c *clientConn) send(p []byte) error {
	if c.flow == nil {
		return c.enqueue(p, 1)
	}
	if len(c.enc.waiting) > 0 {
		return c.sendEncoded(p) // encodepublish.go
	}
	return c.sendFiltered(p)
}

// sendFiltered passes p, less what flow control keeps back or drops, to the
// writer. Called with wmu held.
func (c *clientConn) sendFiltered(p []byte) error {
	out, n, dropped, dropped0 := c.flow.filter(p, c.waiting())
	for _, id := range dropped {
		c.dropQueued(id)
	}
	if dropped0 > 0 {
		atomic.AddInt64(&c.broker.srv.Info.MessagesDropped, int64(dropped0))
		c.broker.logDrop(c.mochi, "mqtt client does not read, dropping QoS 0 messages (max_queued_messages)")
	}
	return c.enqueue(out, n)
}

// acked ends the flow of a publish and passes on the queued ones that now
// fit.
func (c *clientConn) acked(id uint16) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.flow == nil {
		return nil
	}
	var err error
	c.flow.ack(id, func(b []byte, buf *bytes.Buffer) {
		c.q.lender = buf // the queue may keep the publish in it
		switch {
		case c.holding:
			c.held = append(c.held, b...)
		case err == nil:
			// Each publish as it is: the write path keeps it rather
			// than copying it (outqueue.go).
			err = c.enqueue(b, 1)
		}
		if c.q.lender != nil {
			c.q.lender = nil
			putEncodeBuffer(buf)
		}
	})
	c.progressed()
	return err
}

// dropQueued removes a QoS 1/2 message the queue had no room for from
// mochi's in-flight store (and from storage), as mochi does for a message it
// drops itself, and counts it in $SYS/broker/messages/dropped. Called with
// wmu held, under mochi's client lock: the storage delete, a synchronous
// write, runs on a goroutine of its own so that it does not hold up
// publishers to this client.
func (c *clientConn) dropQueued(id uint16) {
	cl := c.mochi
	if !cl.State.Inflight.Delete(id) {
		return
	}
	b := c.broker
	atomic.AddInt64(&b.srv.Info.Inflight, -1)
	atomic.AddInt64(&b.srv.Info.MessagesDropped, 1)
	if b.store != nil && b.store.keep(cl) {
		go b.store.OnQosDropped(cl, packets.Packet{PacketID: id})
	}
	b.logDrop(cl, queueFullMsg)
}

// offlineQueueFull reports whether a disconnected persistent session has as
// many QoS 1/2 messages stored as it may queue.
func (b *Broker) offlineQueueFull(cl *mqtt.Client, cc *clientConn) bool {
	limit := int(b.opts.MaxQueuedMessages)
	if cc != nil {
		limit = cc.queueLimit(b)
	}
	if cl.State.Inflight.Len() < limit {
		return false
	}
	atomic.AddInt64(&b.srv.Info.MessagesDropped, 1)
	b.logDrop(cl, queueFullMsg)
	return true
}

const queueFullMsg = "mqtt client queue full, dropping QoS 1/2 messages (max_queued_messages)"

// logDrop logs dropped messages at most once per interval per client and
// reason.
func (b *Broker) logDrop(cl *mqtt.Client, msg string) {
	if b.drops.allow(msg+"\x00"+cl.ID, time.Now()) {
		b.log.Warn(msg, "client", cl.ID, "username", string(cl.Properties.Username), "door", cl.Net.Listener)
	}
}

// track numbers a QoS 1/2 message that the broker sends a client itself
// (retained.go, handover.go) and keeps it in the session, as mochi does for
// the messages it publishes. ok is false when no packet identifier is left;
// added reports that the message is new to the session, and is then stored
// (on disk) unless the caller stores it itself (handover.go, which calls
// track under its lock and must not wait for the disk there).
func (b *Broker) track(cl *mqtt.Client, cc *clientConn, out *packets.Packet, store bool) (ok, added bool) {
	id, err := cl.NextPacketID()
	if err != nil {
		return false, false
	}
	out.PacketID = uint16(id)
	cc.ids.lastOut.Store(id)
	// Written live, no part of a queue being resent (storage.go); noted
	// before it joins the session: a resend that took the queue in between
	// counted it as queued, and one queued message was not resent in its
	// place.
	cc.resend.written(out.PacketID)
	if !cl.State.Inflight.Set(*out) {
		return true, false
	}
	atomic.AddInt64(&b.srv.Info.Inflight, 1)
	if store {
		b.storeTracked(cl, *out)
	}
	return true, true
}

// storeTracked writes a message track added to cl's session to disk.
func (b *Broker) storeTracked(cl *mqtt.Client, pk packets.Packet) {
	if b.store != nil {
		b.store.tracked(cl, pk)
	}
}
