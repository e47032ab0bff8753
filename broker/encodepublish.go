package broker

import (
	"bytes"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// publishEncoder encodes a PUBLISH of some size into a pooled buffer, in
// mochi's OnPacketEncode (called by encodeHook, encode.go, after every
// concern that changes a PUBLISH).
//
// mochi encodes every packet into a new bytes.Buffer that starts at 64
// bytes and grows to about twice what it holds (MOCHI.md row 37): for each
// delivery of a 4 KiB message, 5 KB allocated, zeroed and copied into, a
// third of what the broker allocated per delivery, feeding the collector
// that dominates large messages. Encoded here, with mochi's own
// PublishEncode, the packet is written from a buffer that is used again.
//
// mochi then encodes and writes what the hook returns instead: a
// placeholder, a PUBLISH with both QoS bits set, which mochi never writes
// (a malformed packet, [MQTT-3.3.1-4]), whose packet identifier names the
// encoded packet. The write path puts the encoded packet in its place
// (clientConn.sendEncoded), so packets keep the order mochi writes them in,
// through its write lock and its write buffer, and mochi keeps its own
// bookkeeping (errors, the count of messages sent).
type publishEncoder struct {
	// off: another hook (Options.Hooks) changes or reads the packets
	// written, which would see placeholders; mochi encodes everything.
	off bool
}

// Payloads from ownEncodeFrom to ownEncodeMax bytes are encoded here:
// below, mochi's buffer grows once at most, and the placeholder's encoding
// would cost more than it saves; above, a pooled buffer would hold much
// memory for a rare packet.
const (
	ownEncodeFrom = 512
	ownEncodeMax  = 256 << 10
)

// maxEncodedWaiting bounds the bytes of a connection's encoded packets
// waiting for their placeholders (one packet may be larger). mochi gathers
// packets in its write buffer while more wait in its channel and writes
// them once it holds 2 KiB: that is a few packets of their own size, but
// some 300 placeholders, for which as many encoded packets would wait, up
// to 85 MB of 256 KiB messages. Beyond the bound mochi encodes the next
// packet itself, which makes it write its buffer, placeholders included.
const maxEncodedWaiting = 256 << 10

// encodeBuffers are the buffers publishEncoder encodes into.
var encodeBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putEncodeBuffer returns b to encodeBuffers once nothing refers to its
// bytes.
func putEncodeBuffer(b *bytes.Buffer) {
	if b.Cap() <= 2*ownEncodeMax {
		b.Reset()
		encodeBuffers.Put(b)
	}
}

// placeholderHeader marks a placeholder: a PUBLISH (type 3) with QoS bits
// 11. isPlaceholder masks off the DUP and RETAIN bits.
const placeholderHeader = packets.Publish<<4 | 3<<1

// isPlaceholder reports whether the packet starting with header byte h is
// a placeholder.
func isPlaceholder(h byte) bool { return h&0xF6 == placeholderHeader }

// encodedPublishes are a connection's packets encoded by publishEncoder
// whose placeholders mochi has not yet written. Guarded by the
// connection's wmu.
type encodedPublishes struct {
	waiting []encodedPublish // from head on
	head    int
	bytes   int    // of the packets waiting
	last    uint16 // the last placeholder identifier given out
}

type encodedPublish struct {
	id      uint16
	buf     *bytes.Buffer
	qos     byte
	payload int
}

func (e *publishEncoder) encode(cl *mqtt.Client, pk *packets.Packet) {
	if e.off || len(pk.Payload) < ownEncodeFrom || len(pk.Payload) > ownEncodeMax {
		return
	}
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	buf := encodeBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	// An encoding error, or a packet larger than the client's maximum
	// packet size, is left to mochi, which encodes the packet again and
	// refuses it as it always has ([MQTT-3.1.2-24]).
	if pk.PublishEncode(buf) != nil || pk.Mods.MaxSize > 0 && uint32(buf.Len()) > pk.Mods.MaxSize {
		putEncodeBuffer(buf)
		return
	}
	id, ok := cc.encoded(encodedPublish{buf: buf, qos: pk.FixedHeader.Qos, payload: len(pk.Payload)})
	if !ok {
		putEncodeBuffer(buf)
		return
	}
	*pk = packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: 3},
		PacketID:        id,
		ProtocolVersion: pk.ProtocolVersion,
		Mods:            pk.Mods,
	}
}

// encoded keeps p until its placeholder is written and returns the
// placeholder's identifier; false when mochi is to write the packet
// itself: before flow control is set up (sendEncoded runs behind it),
// after a failed write, or with maxEncodedWaiting bytes waiting.
func (c *clientConn) encoded(p encodedPublish) (uint16, bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	e := &c.enc
	if c.flow == nil || c.werr != nil || e.bytes > 0 && e.bytes+p.buf.Len() > maxEncodedWaiting {
		return 0, false
	}
	e.bytes += p.buf.Len()
	e.last++
	if e.last == 0 {
		e.last = 1
	}
	p.id = e.last
	e.waiting = append(e.waiting, p)
	return p.id, true
}

// sendEncoded sends p, in which each placeholder is replaced by the packet
// it names (see publishEncoder). Called by send with wmu held, while
// packets wait for their placeholders.
func (c *clientConn) sendEncoded(p []byte) error {
	run := 0 // the start of what is not yet sent
	for pos := 0; pos < len(p); {
		n, id, _, ok := nextPacket(p[pos:])
		if !ok {
			break
		}
		if !isPlaceholder(p[pos]) {
			pos += n
			continue
		}
		if pos > run {
			if err := c.sendFiltered(p[run:pos]); err != nil {
				return err
			}
		}
		pos += n
		run = pos
		ep, found := c.enc.take(id)
		if !found {
			continue
		}
		size := ep.buf.Len()
		// The queue, or flow control, takes the buffer if it keeps the
		// packet in it (outqueue.go, flow.go); otherwise it is free again.
		c.q.lender, c.flow.lender = ep.buf, ep.buf
		err := c.sendFiltered(ep.buf.Bytes())
		if c.q.lender != nil && c.flow.lender != nil {
			putEncodeBuffer(ep.buf)
		}
		c.q.lender, c.flow.lender = nil, nil
		if err != nil {
			return err
		}
		// mochi counted the placeholder's bytes, and sent the metrics
		// hook the placeholder.
		atomic.AddInt64(&c.broker.srv.Info.BytesSent, int64(size-n))
		if !c.broker.opts.NoMetrics {
			c.m.sent(ep.qos, ep.payload)
		}
	}
	return c.sendFiltered(p[run:])
}

// take removes and returns the packet named id: the first one waiting,
// unless mochi's writers overtook each other.
func (e *encodedPublishes) take(id uint16) (encodedPublish, bool) {
	i := e.head
	for i < len(e.waiting) && e.waiting[i].id != id {
		i++
	}
	if i == len(e.waiting) {
		return encodedPublish{}, false
	}
	p := e.waiting[i]
	e.bytes -= p.buf.Len()
	copy(e.waiting[e.head+1:i+1], e.waiting[e.head:i]) // rarely any
	e.waiting[e.head] = encodedPublish{}
	e.head++
	switch {
	case e.head == len(e.waiting):
		e.waiting, e.head = e.waiting[:0], 0
		if cap(e.waiting) > 64 {
			e.waiting = nil // a burst's array is not kept
		}
	case e.head > len(e.waiting)/2:
		n := copy(e.waiting, e.waiting[e.head:])
		clear(e.waiting[n:])
		e.waiting, e.head = e.waiting[:n], 0
	}
	return p, true
}

// reset drops what waits: the connection has failed.
func (e *encodedPublishes) reset() { *e = encodedPublishes{last: e.last} }
