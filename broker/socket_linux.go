package broker

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rawSocket writes to a TCP socket without waiting: what the socket's send
// buffer takes now is written, the rest is left to the caller. It lets the
// goroutine that encoded a packet (mochi's writer, or a read loop sending an
// acknowledgement) write it itself, with no hand-off to another goroutine and
// no copy, while a client that does not read can never block it (see
// writer.go).
type rawSocket struct {
	conn net.Conn // a *net.TCPConn: net.Buffers writes to it with writev
	rc   syscall.RawConn

	// One attempt's buffer and result; the connection's wmu serialises
	// attempts. attempt is made once, so that an attempt allocates nothing.
	buf     []byte
	n       int
	err     error
	attempt func(fd uintptr) bool

	last time.Time // the last write, direct or by the writer goroutine
}

// directGap is how long after a write the next packet is queued for
// the writer goroutine rather than written directly: packets closer together
// than this are a busy connection's, gathered into one write.
const directGap = 50 * time.Microsecond

// idle reports whether nothing was written for directGap, and if so counts
// now as the last write. Called with the connection's wmu
// held.
func (s *rawSocket) idle() bool {
	now := time.Now()
	if now.Sub(s.last) < directGap {
		return false
	}
	s.last = now
	return true
}

// wrote counts now as the last write (the writer goroutine's). Called with
// the connection's wmu held.
func (s *rawSocket) wrote() { s.last = time.Now() }

// newRawSocket returns the socket of c, or nil when c has none.
func newRawSocket(c net.Conn) *rawSocket {
	s, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := s.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawSocket{conn: c, rc: rc}
	r.attempt = r.writeOnce
	return r
}

// tryWrite1 writes as much of b as the socket takes now and returns how many
// bytes that was. Called with the connection's wmu held.
func (s *rawSocket) tryWrite1(b []byte) (int, error) {
	s.buf = b
	cerr := s.rc.Write(s.attempt)
	n, err := s.n, s.err
	s.buf, s.err = nil, nil
	if cerr != nil {
		return 0, cerr
	}
	if errors.Is(err, unix.EAGAIN) {
		return 0, nil
	}
	return max(n, 0), err
}

// writeOnce is one write(2) on the non-blocking socket; it never asks the
// runtime to wait for the socket to become writable.
func (s *rawSocket) writeOnce(fd uintptr) bool {
	for {
		s.n, s.err = unix.Write(int(fd), s.buf)
		if s.err != unix.EINTR {
			return true
		}
	}
}
