package broker

import (
	"reflect"
	"runtime"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Backpressure: a publisher waits for a subscriber that reads.
//
// mochi acknowledges a publish and hands it to every subscriber at once; a
// subscriber's messages then wait in its queues (mochi's write buffer, the
// connection's write buffer, the QoS 1/2 queue behind the in-flight window),
// and what finds them full is dropped. A publisher is not held back by a
// subscriber at all, so a publisher faster than a subscriber's round trips
// (an MQTT.js client with 100 messages in flight against a QoS 1 subscriber
// with a window of 20) filled the subscriber's queue and lost messages the
// broker had acknowledged, while the subscriber read as fast as it could.
//
// So before mochi hands a message to a connected subscriber whose queues are
// half full, the delivering goroutine (the publisher's read loop, which then
// reads nothing more from the publisher: TCP pushes back) waits until there
// is room again. It waits only for a subscriber that is making progress, and
// not for long: a subscriber with no write or acknowledgement for
// stallAfter, or one that kept a publisher waiting maxWait, is marked slow
// and not waited for again until its queues have drained to a quarter.
// Messages for a slow subscriber are queued up to its limits and then
// dropped, as mosquitto does, so a client that reads slowly, or not at all,
// can delay a publisher by at most maxWait once, not pace the broker.
const (
	stallAfter = 500 * time.Millisecond
	maxWait    = 2 * time.Second
)

// roomState is a connection's side of backpressure, guarded by its wmu
// (publishing is atomic).
type roomState struct {
	room     chan struct{} // closed when there is room; nil when nobody waits
	slot     chan struct{} // closed when mochi's write channel is below half; nil when nobody waits
	slow     bool          // not waited for until the queues drain
	progress time.Time     // the last write to the client or acknowledgement
	// publishing: the read loop is delivering a publish of the client's
	// own (backpressureHook).
	publishing atomic.Bool
}

// backlog returns the QoS 1/2 messages waiting for the window and the
// packets waiting to be written, mochi's write buffer included. Called with
// wmu held.
func (c *clientConn) backlog() (queued, writes int) {
	if c.flow == nil {
		return 0, 0
	}
	return c.flow.queueLen(), c.waiting() + mochiWritesPending(c.mochi)
}

// congested reports whether the queues are half full. Called with wmu held.
func (c *clientConn) congested() bool {
	if c.flow == nil || c.closing || c.werr != nil {
		return false
	}
	q, w := c.backlog()
	return q >= max(c.flow.queueMax/2, 1) || w >= max(c.flow.writeMax/2, 1)
}

// progressed records that the client took something, wakes the publishers
// waiting for room once there is, and ends the slow mark once the queues
// have drained to a quarter. Called with wmu held.
func (c *clientConn) progressed() {
	r := &c.room
	r.progress = time.Now()
	if !r.slow && r.room == nil {
		return
	}
	if r.slow && c.flow != nil {
		if q, w := c.backlog(); q <= c.flow.queueMax/4 && w <= c.flow.writeMax/4 {
			r.slow = false
		}
	}
	if !c.congested() {
		c.wakeWaiters()
	}
}

// wakeWaiters wakes those waiting for room. Called with wmu held.
func (c *clientConn) wakeWaiters() {
	if c.room.room != nil {
		close(c.room.room)
		c.room.room = nil
	}
	if c.room.slot != nil {
		close(c.room.slot)
		c.room.slot = nil
	}
}

// awaitRoom waits, as described above, until the connection's queues have
// room for one more message.
func (c *clientConn) awaitRoom() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.room.slow || c.room.publishing.Load() || !c.congested() {
		return
	}
	start := time.Now()
	for c.congested() {
		now := time.Now()
		idle := now.Sub(c.room.progress)
		if idle >= stallAfter || now.Sub(start) >= maxWait {
			c.room.slow = true
			return
		}
		if c.room.room == nil {
			c.room.room = make(chan struct{})
		}
		room := c.room.room
		c.wmu.Unlock()
		t := time.NewTimer(min(stallAfter-idle, maxWait-now.Sub(start)))
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
		c.wmu.Lock()
	}
}

// awaitRoomPatiently waits until the queues have room or the connection is
// closed, however long that takes.
func (c *clientConn) awaitRoomPatiently() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for c.congested() {
		if c.room.room == nil {
			c.room.room = make(chan struct{})
		}
		room := c.room.room
		c.wmu.Unlock()
		t := time.NewTimer(time.Second) // then look again
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
		c.wmu.Lock()
	}
}

// mochiWriteSlots is the size of mochi's per-client write channel
// (Capabilities.MaximumClientWritesPending), allocated in full for every
// connection: 8 bytes a slot.
const mochiWriteSlots = 128

// awaitWriteSlot waits until mochi's write channel for cl is less than half
// full. mochi drops a message, QoS 1/2 included, that finds the channel full
// (MOCHI.md, row 9); its writer goroutine empties the channel as fast as it
// is scheduled, because Write never waits for the socket, so this wait is
// for the scheduler only. It is bounded all the same (about a second), so
// that nothing can hold a publisher for longer.
//
// After a few yields it waits to be woken by the client's Write (mochi's
// writer calls it for each packet it takes from the channel) once the
// channel is below half. It slept 500 µs at a time before: at 64 B, 4
// publishers and 4 subscribers, the publishers' read loops slept 8,600
// times in 6 s, a sixth of their time, with the CPU idle meanwhile.
func awaitWriteSlot(cl *mqtt.Client) {
	cc, _ := cl.Net.Conn.(*clientConn)
	for i := 0; mochiWritesPending(cl) >= mochiWriteSlots/2; i++ {
		if i == 2000 || cl.Closed() {
			return
		}
		switch {
		case i < 8:
			runtime.Gosched()
		case cc != nil:
			cc.awaitSlot(cl, 500*time.Microsecond)
		default:
			time.Sleep(500 * time.Microsecond)
		}
	}
}

// awaitSlot waits at most d for slotTaken to find mochi's write channel
// below half. The timeout covers a packet mochi takes from the channel and
// then drops without writing (MOCHI.md, row 33).
func (c *clientConn) awaitSlot(cl *mqtt.Client, d time.Duration) {
	c.wmu.Lock()
	if mochiWritesPending(cl) < mochiWriteSlots/2 {
		c.wmu.Unlock()
		return
	}
	if c.werr != nil || c.closing {
		// Nothing more is written: mochi closes the client soon.
		c.wmu.Unlock()
		time.Sleep(d)
		return
	}
	if c.room.slot == nil {
		c.room.slot = make(chan struct{})
	}
	slot := c.room.slot
	c.wmu.Unlock()
	t := time.NewTimer(d)
	select {
	case <-slot:
	case <-t.C:
	}
	t.Stop()
}

// slotTaken wakes those waiting in awaitSlot once mochi's write channel is
// below half. Called with wmu held, by Write.
func (c *clientConn) slotTaken() {
	if c.room.slot != nil && mochiWritesPending(c.mochi) < mochiWriteSlots/2 {
		close(c.room.slot)
		c.room.slot = nil
	}
}

// mochiWritesPending is the number of packets in mochi's write buffer for
// cl (the channel its writer goroutine takes from, Client.State.outbound).
// mochi does not export it; reading a channel's length through reflection
// changes nothing. See MOCHI.md.
func mochiWritesPending(cl *mqtt.Client) int {
	if cl == nil || outboundField == nil {
		return 0
	}
	return reflect.ValueOf(&cl.State).Elem().FieldByIndex(outboundField).Len()
}

// outboundField is the index of mqtt.ClientState's outbound channel, nil if
// mochi no longer has one.
var outboundField = func() []int {
	f, ok := reflect.TypeFor[mqtt.ClientState]().FieldByName("outbound")
	if !ok || f.Type.Kind() != reflect.Chan {
		return nil
	}
	return f.Index
}()

// backpressureHook notes which connections' read loops are busy delivering
// a publish of their own. Such a connection reads no acknowledgements until
// the delivery is over, so a publisher must not wait for its queue: two
// clients publishing to each other would wait for each other.
type backpressureHook struct {
	mqtt.HookBase
}

func (h *backpressureHook) ID() string { return "caddy-mqtt-backpressure" }

func (h *backpressureHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnPacketProcessed || b == mqtt.OnPublishDropped
}

func (h *backpressureHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.room.publishing.Store(true)
	}
	return pk, nil
}

func (h *backpressureHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok && pk.FixedHeader.Type == packets.Publish {
		cc.room.publishing.Store(false)
	}
}

// OnPublishDropped logs a message mochi dropped because the client's write
// buffer was full (mochi counts it in $SYS/broker/messages/dropped).
func (h *backpressureHook) OnPublishDropped(cl *mqtt.Client, _ packets.Packet) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.broker.logDrop(cl, "mqtt client does not read, dropping messages (write buffer full)")
	}
}
