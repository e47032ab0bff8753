package broker

import (
	"bytes"
	"sync"
)

// outQueue holds the bytes waiting to be written to one connection, as a list
// of segments written in order. It never grows one buffer by appending to it:
// that copied everything queued so far on every growth, allocated and zeroed
// a new large buffer each time, and was a fifth of the broker's CPU at 4 KiB
// per message (docs/PERFORMANCE.md).
//
//   - A packet of at least keepFrom bytes stays in the buffer mochi encoded it
//     into: mochi encodes every packet into a buffer of its own and never
//     touches it again once it has been written (MOCHI.md, row 31), so the
//     bytes are written from there, not copied. So are those of a PUBLISH
//     that publishEncoder encoded into one of its pooled buffers (lender),
//     which goes back to its pool once written.
//   - Smaller ones are copied into chunks of chunkSize bytes from a pool, so
//     that many small packets leave in one write (one syscall, one TLS
//     record, one WebSocket frame). A chunk goes back to the pool once it
//     has been written.
//   - A connection that fills a chunk before its writer takes the queue is
//     busy: its next chunks are bigChunkSize bytes. On a WebSocket each
//     chunk is one frame, and coder/websocket writes a frame of more than
//     4 KiB in two system calls (its 4 KiB buffer with the frame header,
//     then the rest), however large the frame: at 4 KiB per message, 32 KiB
//     chunks cost 0.32 writes per delivery, against 0.05 on a TCP socket
//     with writev (docs/PERFORMANCE.md, stop 30). A quiet connection, or
//     one with a few packets waiting, uses only the small chunks.
//
// It is guarded by the connection's wmu.
type outQueue struct {
	segs     [][]byte
	chunks   []*[]byte // the pooled chunks segs use, returned after writing
	tail     *[]byte   // the last chunk, while segs ends with it
	keepFrom int       // packets this long or longer are not copied
	// lender is the pooled buffer of publishEncoder (encodepublish.go)
	// that the bytes being added are in; add takes it (lent, and clears
	// lender) when it keeps them rather than copying them.
	lender *bytes.Buffer
	lent   []*bytes.Buffer // the lenders segs use, returned after writing
}

const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, chunkSize)
	return &b
}}

// bigChunkSize is the size of a busy connection's chunks (see outQueue).
const bigChunkSize = 128 << 10

var bigChunkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, bigChunkSize)
	return &b
}}

// add queues b, which the queue may keep (see outQueue).
func (q *outQueue) add(b []byte) {
	if len(b) == 0 {
		return
	}
	if len(b) >= q.keepFrom || len(b) > chunkSize {
		if q.lender != nil {
			q.lent = append(q.lent, q.lender)
			q.lender = nil
		}
		q.segs = append(q.segs, b)
		q.tail = nil
		return
	}
	if q.tail != nil && cap(*q.tail)-len(*q.tail) >= len(b) {
		*q.tail = append(*q.tail, b...)
		q.segs[len(q.segs)-1] = *q.tail
		return
	}
	pool := &chunkPool
	if len(q.chunks) > 0 { // one chunk is full: busy
		pool = &bigChunkPool
	}
	c := pool.Get().(*[]byte)
	*c = append((*c)[:0], b...)
	q.chunks = append(q.chunks, c)
	q.tail = c
	q.segs = append(q.segs, *c)
}

// empty reports whether nothing waits.
func (q *outQueue) empty() bool { return len(q.segs) == 0 }

// take hands everything queued to the writer and leaves the queue empty;
// spare is an emptied batch whose lists the queue reuses.
func (q *outQueue) take(spare outBatch) outBatch {
	b := outBatch{segs: q.segs, chunks: q.chunks, lent: q.lent}
	q.segs, q.chunks, q.lent, q.tail = spare.segs[:0], spare.chunks[:0], spare.lent[:0], nil
	return b
}

// reset drops everything queued (the connection failed or is done).
func (q *outQueue) reset() {
	outBatch{segs: q.segs, chunks: q.chunks, lent: q.lent}.release()
	q.segs, q.chunks, q.lent, q.tail = nil, nil, nil, nil
}

// outBatch is what the writer writes in one go.
type outBatch struct {
	segs   [][]byte
	chunks []*[]byte
	lent   []*bytes.Buffer
}

// release returns the batch's chunks to the pool and clears its lists, so
// that they hold on to no packet.
func (b outBatch) release() outBatch {
	for i, c := range b.chunks {
		switch cap(*c) {
		case chunkSize:
			*c = (*c)[:0]
			chunkPool.Put(c)
		case bigChunkSize:
			*c = (*c)[:0]
			bigChunkPool.Put(c)
		}
		b.chunks[i] = nil
	}
	for i, l := range b.lent {
		putEncodeBuffer(l)
		b.lent[i] = nil
	}
	clear(b.segs)
	return outBatch{segs: b.segs[:0], chunks: b.chunks[:0], lent: b.lent[:0]}
}
