package broker

import (
	"net"
	"sync"
)

// readAhead reads a busy connection (plain TCP, WebSocket) in blocks of
// readAheadSize.
//
// mochi reads through a bufio.Reader of ClientNetReadBufferSize bytes (1 KiB,
// allocated for every connection, so kept small for idle ones), and a packet
// larger than that in two reads: the fill that brings its fixed header, then
// the rest of its body straight into the packet. A publisher of 4 KiB
// messages cost the broker two read system calls per message, 0.5 per
// delivery at 4 × 4 (docs/PERFORMANCE.md, stop 30).
//
// So once a read has filled what it was asked for (more is probably waiting
// in the socket), the next one reads a whole block from a pool, and the
// reads after it are served from that block until it is used up; then the
// block goes back to the pool. A connection holds a block only while it has
// unread bytes in it, or, rarely, while it waits for more after a read that
// filled a block exactly: at most readAheadSize bytes per connection, less
// than the packets an authenticated client may have in flight anyway. An
// idle connection reads straight into mochi's buffer and holds none. Before
// CONNECT has been read (on), every read goes straight through: a client
// that is not authenticated gets no block for the bytes it sends.
//
// The same holds on a WebSocket: coder/websocket reads a frame's payload
// through net/http's 4 KiB buffer when asked for less than that, so a
// publisher's 64 KiB frame took 16 read calls (0.25 per delivery at 4 KiB,
// 0.08 with read-ahead). TLS connections need none of this: tls.Conn reads
// whole records into a buffer of its own.
type readAhead struct {
	net.Conn
	block *[]byte // unread bytes are (*block)[r:w]
	r, w  int
	err   error // the error that came with the block's bytes, after them
	busy  bool  // the last read filled its buffer
	on    bool  // set once CONNECT is read (packetLimitConn)
}

const readAheadSize = 16 << 10

var readAheadBlocks = sync.Pool{New: func() any {
	b := make([]byte, readAheadSize)
	return &b
}}

func (c *readAhead) Read(p []byte) (int, error) {
	if c.block != nil {
		n := copy(p, (*c.block)[c.r:c.w])
		c.r += n
		if c.r < c.w {
			return n, nil
		}
		readAheadBlocks.Put(c.block)
		c.block = nil
		err := c.err
		c.err = nil
		return n, err
	}
	if !c.on || !c.busy || len(p) >= readAheadSize {
		n, err := c.Conn.Read(p)
		c.busy = n == len(p) && len(p) > 0
		return n, err
	}
	b := readAheadBlocks.Get().(*[]byte)
	n, err := c.Conn.Read(*b)
	c.busy = n == len(*b)
	m := copy(p, (*b)[:n])
	if m == n {
		readAheadBlocks.Put(b)
		return m, err
	}
	c.block, c.r, c.w, c.err = b, m, n, err
	return m, nil
}
