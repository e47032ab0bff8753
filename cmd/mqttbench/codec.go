package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A minimal MQTT 3.1.1 codec: only what the load generator sends and reads.
// Everything appends to caller-owned buffers, so the hot loops allocate
// nothing once their buffers have grown.

const (
	pktConnect   = 1
	pktConnack   = 2
	pktPublish   = 3
	pktPuback    = 4
	pktPubrec    = 5
	pktPubrel    = 6
	pktPubcomp   = 7
	pktSubscribe = 8
	pktSuback    = 9
	pktPingresp  = 13
	pktDisconn   = 14
)

// appendVarint appends the MQTT Remaining Length encoding of n.
func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// appendConnect appends a clean-session CONNECT for MQTT 3.1.1.
func appendConnect(b []byte, clientID string, keepAlive uint16) []byte {
	rl := 10 + 2 + len(clientID)
	b = append(b, pktConnect<<4)
	b = appendVarint(b, rl)
	b = appendString(b, "MQTT")
	b = append(b, 4, 0x02, byte(keepAlive>>8), byte(keepAlive))
	return appendString(b, clientID)
}

func appendSubscribe(b []byte, pid uint16, topic string, qos byte) []byte {
	b = append(b, pktSubscribe<<4|0x02)
	b = appendVarint(b, 2+2+len(topic)+1)
	b = append(b, byte(pid>>8), byte(pid))
	b = appendString(b, topic)
	return append(b, qos)
}

// appendPublishHeader appends a PUBLISH up to its payload; the caller
// appends exactly payloadLen bytes after it.
func appendPublishHeader(b []byte, topic string, qos byte, pid uint16, payloadLen int) []byte {
	rl := 2 + len(topic) + payloadLen
	if qos > 0 {
		rl += 2
	}
	b = append(b, pktPublish<<4|qos<<1)
	b = appendVarint(b, rl)
	b = appendString(b, topic)
	if qos > 0 {
		b = append(b, byte(pid>>8), byte(pid))
	}
	return b
}

// appendAck appends PUBACK, PUBREC, PUBREL or PUBCOMP.
func appendAck(b []byte, typ byte, pid uint16) []byte {
	h := typ << 4
	if typ == pktPubrel {
		h |= 0x02 // [MQTT-3.6.1-1]
	}
	return append(b, h, 2, byte(pid>>8), byte(pid))
}

var errMalformed = errors.New("malformed packet")

// readPacket reads one packet into *buf (grown as needed) and returns its
// first header byte and its body (valid until the next call).
func readPacket(r *bufio.Reader, buf *[]byte, max int) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			break
		}
		shift += 7
		if i == 3 {
			return 0, nil, errMalformed
		}
	}
	if n > max {
		return 0, nil, fmt.Errorf("packet of %d bytes over the limit %d", n, max)
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	body := (*buf)[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return h, body, nil
}

// parsePublish splits a PUBLISH body (3.1.1) into packet id and payload.
func parsePublish(h byte, body []byte) (qos byte, pid uint16, payload []byte, err error) {
	qos = (h >> 1) & 3
	if len(body) < 2 {
		return 0, 0, nil, errMalformed
	}
	tl := int(binary.BigEndian.Uint16(body))
	off := 2 + tl
	if qos > 0 {
		off += 2
	}
	if off > len(body) {
		return 0, 0, nil, errMalformed
	}
	if qos > 0 {
		pid = binary.BigEndian.Uint16(body[2+tl:])
	}
	return qos, pid, body[off:], nil
}
