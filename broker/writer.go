package broker

import (
	"errors"
	"net"
	"runtime"
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
// is given through flow control (flow.go) into the connection's own buffer,
// and a writer goroutine, running only while there is something to write,
// writes that buffer out. The buffer is bounded: QoS 1/2 publishes are
// limited by the window, QoS 0 ones are dropped once max_queued_messages
// packets wait, and everything else is a bounded number of acknowledgements.

// maxRepliesWaiting is how many packets beyond what flow control allows
// may wait to be written before the client counts as not reading.
const maxRepliesWaiting = 1024

// ErrNotReading ends the connection of a client that sends and does not
// read what the broker answers.
var ErrNotReading = errors.New("mqtt: client does not read")

// Write takes p for the client, or keeps it while the connection is held
// (storage.go). It does not wait for the socket.
func (c *clientConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
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

// enqueue adds n packets in b to what the writer goroutine writes, and
// starts it if it is not running. Called with wmu held.
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
	c.out = append(c.out, b...)
	c.outN += n
	if c.flow != nil && c.outN > c.flow.writeMax+c.flow.window+maxRepliesWaiting {
		// Publishes are bounded by flow control, but a client that sends
		// and never reads would have its replies (acknowledgements,
		// SUBACKs, PINGRESPs) buffered without end.
		c.werr = ErrNotReading
		c.out, c.outN = nil, 0
		_ = c.Conn.Close()
		c.wakeWaiters()
		c.broker.logDrop(c.mochi, "mqtt client does not read its replies, closing the connection")
		return c.werr
	}
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	return nil
}

// waiting is the number of packets not yet written. Called with wmu held.
func (c *clientConn) waiting() int { return c.outN + c.busyN }

// writeLoop writes the buffer out until it is empty or a write fails; a
// failed write closes the connection, which ends the session.
func (c *clientConn) writeLoop() {
	var spare []byte
	c.wmu.Lock()
	for {
		if len(c.out) == 0 && c.werr == nil {
			// More often than not the next packet is on its way: give
			// its writer a moment rather than end and start again.
			c.wmu.Unlock()
			runtime.Gosched()
			c.wmu.Lock()
		}
		if len(c.out) == 0 || c.werr != nil {
			break
		}
		buf := c.out
		c.busyN, c.outN = c.outN, 0
		c.out = spare[:0]
		c.wmu.Unlock()
		_, err := c.write(buf)
		c.wmu.Lock()
		c.busyN = 0
		if err != nil {
			c.werr = err
			c.out, c.outN = nil, 0
			_ = c.Conn.Close()
			c.wakeWaiters() // nobody waits for a closed connection
		} else {
			c.progressed()
		}
		// Two buffers take turns; a large one is not kept.
		spare = nil
		if cap(buf) <= 64<<10 {
			spare = buf
		}
	}
	c.writing = false
	if cap(c.out) > 4<<10 {
		c.out = nil // an idle connection keeps no large buffer
	}
	c.flushed.Broadcast()
	c.wmu.Unlock()
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
		c.flow, c.held, c.out = nil, nil, nil
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
	if c.writeTimeout > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	n, err := c.Conn.Write(p)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		_ = c.Conn.Close()
	}
	return n, err
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
	err := c.send(c.held)
	if cap(c.held) > 64<<10 {
		c.held = nil
	} else {
		c.held = c.held[:0]
	}
	return err
}

// writeBufferSize is the number of packets mochi may hold for a client
// before its writer goroutine takes them: every QoS 1/2 message the client
// may have in flight or queued, and some room for QoS 0 messages and
// acknowledgements. mochi drops whatever does not fit, QoS 1/2 included, so
// a smaller buffer would lose messages the client's queue has room for when
// a burst comes faster than the writer goroutine is scheduled.
func writeBufferSize(inflight, queued int) int { return inflight + queued + 64 }

// sizeWriteBuffer makes mochi size the write buffer of cc's client for cc's
// door. mochi sizes it, when it creates the client, from one server-wide
// capability; so the capability is set for this connection under
// clientSetup, which the connection holds until mochi, having created the
// client, first reads from it (or gives up). Both happen on Serve's
// goroutine, right after EstablishConnection is called.
func (b *Broker) sizeWriteBuffer(cc *clientConn) {
	b.clientSetup.Lock()
	b.srv.Options.Capabilities.MaximumClientWritesPending = int32(writeBufferSize(cc.inflightLimit(b), cc.queueLimit(b)))
	cc.setupDone = b.clientSetup.Unlock
}

// endSetup ends sizeWriteBuffer's hold, once. Serve's goroutine only.
func (c *clientConn) endSetup() {
	if done := c.setupDone; done != nil {
		c.setupDone = nil
		done()
	}
}

// Read ends sizeWriteBuffer's hold on the first read.
func (c *clientConn) Read(p []byte) (int, error) {
	c.endSetup()
	return c.Conn.Read(p)
}
