package broker

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The write path of a client connection.
//
// mochi writes to a client while holding the client's lock, and its
// publishers take the same lock to number each QoS 1/2 message for that
// client. A write that blocks on a client that does not read therefore
// stalled every publisher with a message for it, and their own subscribers
// with them, for up to the write timeout; meanwhile mochi's per-client write
// buffer filled and it dropped messages, QoS 1/2 included, that the client's
// queue had room for. So Write never waits for the socket: it passes what it
// is given through flow control (flow.go), then
//
//   - on a plain TCP socket (ConnInfo.Socket) with nothing waiting and no
//     write in the last directGap, writes it at once from the calling
//     goroutine, as much as the socket's send buffer takes without waiting
//     (socket_linux.go): no copy, no hand-off, the lowest latency;
//   - queues the rest, and everything on other connections (TLS,
//     WebSocket), in the connection's outQueue (outqueue.go), which a writer
//     goroutine, running only while there is something to write, writes out
//     (with writev on a TCP socket). A busy connection's packets are
//     gathered so: one write per packet cost 1.7 times the CPU per message
//     at 64 bytes, QoS 1 (docs/PERFORMANCE.md), in the broker and in the
//     client that reads them.
//
// The queue is bounded: QoS 1/2 publishes are limited by the window, QoS 0
// ones are dropped once max_queued_messages packets wait, and everything else
// is a bounded number of acknowledgements.

// writeQueue is a connection's write path. wmu guards it, and the flow
// control (flowState) and backpressure (roomState) that decide what enters it.
type writeQueue struct {
	wmu     sync.Mutex
	holding bool     // storage.go: acknowledgements wait until stored
	held    []byte   // written while holding
	q       outQueue // waiting for the writer goroutine
	outN    int      // packets in q
	busyN   int      // packets the writer is writing now
	writing bool     // a writer goroutine runs
	werr    error    // the write that failed; the connection is closed
	closing bool     // Close has begun: nothing more is taken
	// From session establishment to the CONNACK (beforeConnack).
	awaitConnack bool
	early        []byte
	flushed      sync.Cond

	// socket is the door's plain TCP socket (ConnInfo.Socket), written to
	// directly; nil for other connections.
	socket *rawSocket
	// bytesOut counts what is written to socket (metrics); nil without
	// metrics. Other writes are counted by countingConn.
	bytesOut *atomic.Uint64

	// writeTimeout bounds every write to the client (see write).
	writeTimeout time.Duration
	// writeCap bounds every write deadline once shutdown starts (unix ns).
	writeCap atomic.Int64
}

// maxRepliesWaiting is how many packets beyond what flow control allows
// may wait to be written before the client counts as not reading.
const maxRepliesWaiting = 1024

// ErrNotReading ends the connection of a client that sends and does not
// read what the broker answers.
var ErrNotReading = errors.New("mqtt: client does not read")

// Write takes p for the client, or keeps it while the connection is held
// (storage.go). It does not wait for the socket. The write path may keep p
// until it is written (outqueue.go): every caller hands over a buffer it
// does not use again.
func (c *clientConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.slotTaken() // backpressure.go
	if c.werr != nil {
		return 0, c.werr
	}
	if c.holding {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if c.awaitConnack {
		return len(p), c.beforeConnack(p)
	}
	return len(p), c.send(p)
}

// beforeConnack keeps what mochi writes to a resumed session before its
// CONNACK until the CONNACK has gone: mochi registers the session, so that
// messages are routed to it, before it writes the CONNACK, and a message
// published in between went out first (a PUBLISH before CONNACK is a
// protocol error to the client). Called with wmu held.
func (c *clientConn) beforeConnack(p []byte) error {
	for pos := 0; pos < len(p); {
		n, _, _, ok := nextPacket(p[pos:])
		if !ok {
			break
		}
		if p[pos]>>4 == packets.Connack {
			c.early = append(c.early, p[:pos]...)
			c.awaitConnack = false
			err := c.send(p[pos : pos+n])
			if err == nil && len(c.early) > 0 {
				err = c.send(c.early)
			}
			c.early = nil
			if err == nil && pos+n < len(p) {
				err = c.send(p[pos+n:])
			}
			return err
		}
		pos += n
	}
	c.early = append(c.early, p...)
	return nil
}

// enqueue writes n packets in b, or what of them the socket does not take
// now, to the outQueue, and starts the writer goroutine if it is not
// running. Called with wmu held.
func (c *clientConn) enqueue(b []byte, n int) error {
	if c.werr != nil {
		return c.werr
	}
	if c.closing {
		return net.ErrClosed
	}
	if len(b) == 0 {
		return nil
	}
	if c.socket != nil && !c.writing && c.q.empty() && c.socket.idle() {
		w, err := c.socket.tryWrite1(b)
		c.countOut(w)
		if err != nil {
			c.fail(err)
			return err
		}
		if w > 0 {
			c.progressed()
		}
		if w == len(b) {
			return nil
		}
		b = b[w:]
	}
	c.q.add(b)
	c.outN += n
	if c.flow != nil && c.outN > c.flow.writeMax+c.flow.window+maxRepliesWaiting {
		// Publishes are bounded by flow control, but a client that sends
		// and never reads would have its replies (acknowledgements,
		// SUBACKs, PINGRESPs) buffered without end.
		c.fail(ErrNotReading)
		c.broker.logDrop(c.mochi, "mqtt client does not read its replies, closing the connection")
		return c.werr
	}
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	return nil
}

// fail ends the connection after a failed write: nothing more is written.
// Called with wmu held.
func (c *clientConn) fail(err error) {
	c.werr = err
	c.q.reset()
	c.enc.reset()
	c.outN = 0
	_ = c.Conn.Close()
	c.wakeWaiters() // nobody waits for a closed connection
}

// countOut counts n bytes written to the socket directly.
func (c *clientConn) countOut(n int) {
	if c.bytesOut != nil && n > 0 {
		c.bytesOut.Add(uint64(n))
	}
}

// waiting is the number of packets not yet written. Called with wmu held.
func (c *clientConn) waiting() int { return c.outN + c.busyN }

// writeLoop writes the queue out until it is empty or a write fails; a
// failed write closes the connection, which ends the session.
func (c *clientConn) writeLoop() {
	var spare outBatch
	c.wmu.Lock()
	for {
		if c.q.empty() && c.werr == nil {
			// More often than not the next packet is on its way: give
			// its writer a moment rather than end and start again.
			c.wmu.Unlock()
			runtime.Gosched()
			c.wmu.Lock()
		}
		if c.q.empty() || c.werr != nil {
			break
		}
		batch := c.q.take(spare)
		c.busyN, c.outN = c.outN, 0
		c.wmu.Unlock()
		err := c.writeBatch(batch.segs)
		spare = batch.release()
		c.wmu.Lock()
		c.busyN = 0
		if c.socket != nil {
			c.socket.wrote()
		}
		if err != nil {
			if c.werr == nil {
				c.fail(err)
			}
		} else {
			c.progressed()
		}
	}
	c.writing = false
	c.flushed.Broadcast()
	c.wmu.Unlock()
}

// writeBatch writes segs, with one writev on a socket.
func (c *clientConn) writeBatch(segs [][]byte) error {
	if c.socket == nil {
		for _, s := range segs {
			if _, err := c.write(s); err != nil {
				return err
			}
		}
		return nil
	}
	c.setWriteTimeout()
	bufs := net.Buffers(segs)
	n, err := bufs.WriteTo(c.socket.conn)
	c.countOut(int(n))
	c.closeOnTimeout(err)
	if err == nil && c.writeTimeout > 0 {
		// The direct writes that follow do not wait, and must not
		// fail on this deadline once it has passed.
		_ = c.SetWriteDeadline(time.Time{})
	}
	return err
}

// drain waits until what was written so far is out, or writing failed. The
// write deadline bounds each write, and with close set nothing more is
// taken meanwhile (mochi's writer and acknowledgements may go on until
// mochi has finished stopping the client), so the wait ends.
func (c *clientConn) drain(close bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if close {
		c.closing = true
		c.wakeWaiters() // publishers waiting for room go on
	}
	if c.flushed.L == nil {
		c.flushed.L = &c.wmu
	}
	for c.writing {
		c.flushed.Wait()
	}
	if close {
		// mochi keeps a disconnected persistent session's connection
		// until the session expires: keep nothing large with it. (mochi's
		// in-flight store keeps the queued messages themselves.)
		c.flow, c.held = nil, nil
		c.q.reset()
	}
}

// Close writes out what is buffered (mochi writes a DISCONNECT or a refusing
// CONNACK just before it closes) and closes the connection.
func (c *clientConn) Close() error {
	c.drain(true)
	return c.Conn.Close()
}

// write sends p within the write timeout and closes the connection when a
// write times out. A client that takes nothing for that long is gone or
// stalled; without a bound, a stalled client with keepalive 0 would keep its
// session forever, and a new connection taking its client id over would
// wait forever for the DISCONNECT written to it.
func (c *clientConn) write(p []byte) (int, error) {
	c.setWriteTimeout()
	n, err := c.Conn.Write(p)
	c.closeOnTimeout(err)
	return n, err
}

func (c *clientConn) setWriteTimeout() {
	if c.writeTimeout > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
}

func (c *clientConn) closeOnTimeout(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		_ = c.Conn.Close()
	}
}

// SetDeadline sets the read deadline only. mochi calls it with the
// keepalive deadline after every packet it reads, and with none for
// keepalive 0; writes have a deadline of their own (see write).
func (c *clientConn) SetDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline, bounded by capWrites.
func (c *clientConn) SetWriteDeadline(t time.Time) error {
	if limit := c.writeCap.Load(); limit != 0 && (t.IsZero() || t.UnixNano() > limit) {
		t = time.Unix(0, limit)
	}
	return c.Conn.SetWriteDeadline(t)
}

// capWrites makes every write to the client, including one blocked now,
// give up at t (used by Shutdown).
func (c *clientConn) capWrites(t time.Time) {
	c.writeCap.Store(t.UnixNano())
	_ = c.SetWriteDeadline(t)
}

// hold makes writes to the client wait until release.
func (c *clientConn) hold() {
	c.wmu.Lock()
	c.holding = true
	c.wmu.Unlock()
}

// release passes on what was held and stops holding.
func (c *clientConn) release() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.holding = false
	if len(c.held) == 0 {
		return nil
	}
	// The write path may keep what it is given (outqueue.go): held is
	// not reused.
	held := c.held
	c.held = nil
	return c.send(held)
}
