package broker

import (
	"errors"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// DoorLimits are limits a door sets for its own connections, below the
// broker-wide ones.
type DoorLimits struct {
	// MaxConnections caps the connections served through this door at once
	// (0: no door limit). Connections over it are closed before CONNECT is
	// read, as mosquitto does for a listener's max_connections.
	MaxConnections int
	// MaxPacketSize is the largest packet a client of this door may send
	// (0: the broker's). It can only lower the broker's limit, which mochi
	// enforces for every door.
	MaxPacketSize uint32
	// MaxInflightMessages and MaxQueuedMessages replace the broker's for
	// this door's clients (0: the broker's). See Options and flow.go.
	MaxInflightMessages int
	MaxQueuedMessages   int
	// MaxKeepalive replaces the broker's max_keepalive for this door's
	// clients (0: the broker's). See Options.MaxKeepalive.
	MaxKeepalive uint16
}

// Errors for connections refused by a limit.
var (
	ErrBrokerFull  = errors.New("mqtt: max_connections is reached")
	ErrDoorFull    = errors.New("mqtt: the door's max_connections is reached")
	ErrRateLimited = errors.New("mqtt: too many connections from this address")
)

// rateLimiter is a token bucket per client IP: each address may open burst
// connections at once and then one every interval/burst.
type rateLimiter struct {
	burst    float64
	perToken time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(burst int, interval time.Duration) *rateLimiter {
	if burst <= 0 || interval <= 0 {
		return nil
	}
	return &rateLimiter{
		burst:    float64(burst),
		perToken: interval / time.Duration(burst),
		buckets:  make(map[string]*bucket),
	}
}

// allow takes a token for ip, reporting false when its bucket is empty.
func (r *rateLimiter) allow(ip string, now time.Time) bool {
	if r == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Forget addresses whose bucket has refilled, so the map stays as
	// small as the set of recently active addresses.
	full := time.Duration(r.burst) * r.perToken
	if now.Sub(r.swept) > full {
		for k, b := range r.buckets {
			if now.Sub(b.last) >= full {
				delete(r.buckets, k)
			}
		}
		r.swept = now
	}
	b, ok := r.buckets[ip]
	if !ok {
		b = &bucket{tokens: r.burst, last: now}
		r.buckets[ip] = b
	}
	b.tokens = min(r.burst, b.tokens+float64(now.Sub(b.last))/float64(r.perToken))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// peek reports whether ip's bucket has a token, without taking it.
func (r *rateLimiter) peek(ip string, now time.Time) bool {
	if r == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[ip]
	if !ok {
		return true
	}
	return min(r.burst, b.tokens+float64(now.Sub(b.last))/float64(r.perToken)) >= 1
}

func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// rateKey is the key a client address is counted under by the per-address
// limits: the IP for IPv4, the /64 network for IPv6, since one IPv6 host
// usually holds a whole /64 and could otherwise pick a fresh address for
// every connection.
func rateKey(addr net.Addr) string { return hostKey(hostOf(addr)) }

// hostKey is rateKey for an address without port.
func hostKey(host string) string {
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// packetLimitConn checks the framing of the MQTT byte stream the broker
// reads: it follows the packet boundaries and fails the read that brings a
// fixed header announcing a packet over the limit (before the broker
// allocates anything for it) or a remaining length longer than four bytes.
//
// The first packet, CONNECT, arrives before the client is authenticated: it
// has its own, smaller limit (connectLimit), and its bytes are collected
// here as they arrive and handed on only once the packet is complete.
// mochi allocates the whole announced remaining length as soon as it has
// read a fixed header, so otherwise a socket that announces a large
// CONNECT and sends nothing more would pin that much memory until the
// CONNECT deadline.
type packetLimitConn struct {
	net.Conn
	limit        uint32
	connectLimit uint32
	cc           *clientConn

	// The first packet: collected until complete (first), then handed out
	// from first[off:] before reads pass through.
	first       []byte
	off         int
	passThrough bool
	ahead       *readAhead // under this one, started once CONNECT is read

	// Set at CONNECT by keepaliveHook, then read by mochi's read loop only.
	cl        *mqtt.Client
	version   byte
	keepalive uint16
	tooLarge  uint32 // size of the packet refused for its size

	// Decoding check of an MQTT 5 client's packets (readcheck.go).
	check     bool
	capturing bool
	headOnly  bool // capturing only the head of a large PUBLISH
	typeByte  byte
	body      []byte

	// Parser state: reading the type byte, the remaining length, or
	// skipping over the rest of the packet.
	inLength  bool
	length    uint32
	shift     uint
	lenBytes  uint32
	remaining uint32
	complete  int // packets read completely
}

func (c *packetLimitConn) Read(p []byte) (int, error) {
	if !c.passThrough {
		return c.readFirst(p)
	}
	n, err := c.Conn.Read(p)
	if perr := c.scan(p[:n]); perr != nil {
		return 0, c.readFailed(perr)
	}
	if err != nil {
		err = c.readFailed(err)
	}
	return n, err
}

// readFirst collects the first packet whole before any of it is read.
func (c *packetLimitConn) readFirst(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for c.collecting() {
		n, err := c.Conn.Read(p)
		if perr := c.scan(p[:n]); perr != nil {
			return 0, c.readFailed(perr)
		}
		c.first = append(c.first, p[:n]...)
		if err != nil && c.collecting() {
			return 0, err
		}
	}
	n := copy(p, c.first[c.off:])
	c.off += n
	if c.off == len(c.first) {
		c.first, c.passThrough = nil, true
		if c.ahead != nil {
			c.ahead.on = true // the client is past CONNECT (readahead.go)
		}
	}
	return n, nil
}

// collecting reports whether the first packet is still being collected. A
// first packet that is not a CONNECT is handed on at once: mochi refuses it
// from its fixed header [MQTT-3.1.0-1].
func (c *packetLimitConn) collecting() bool {
	return c.complete == 0 && (len(c.first) == 0 || c.first[0] == 0x10)
}

func (c *packetLimitConn) scan(b []byte) error {
	for len(b) > 0 {
		switch {
		case c.remaining > 0:
			skip := min(uint32(len(b)), c.remaining)
			c.remaining -= skip
			if c.capturing {
				if c.headOnly {
					if err := c.captureHead(b[:skip]); err != nil {
						return err
					}
				} else {
					c.body = append(c.body, b[:skip]...)
				}
			}
			b = b[skip:]
			if c.remaining == 0 {
				c.complete++
				if c.capturing {
					if err := c.checkPacket(); err != nil {
						return err
					}
				}
			}
		case !c.inLength:
			// The type byte of the next packet.
			c.inLength, c.length, c.shift, c.lenBytes = true, 0, 0, 0
			c.typeByte = b[0]
			b = b[1:]
		default:
			v := b[0]
			b = b[1:]
			c.length |= uint32(v&0x7f) << c.shift
			c.shift += 7
			c.lenBytes++
			if v&0x80 != 0 {
				if c.lenBytes == 4 {
					return packets.ErrMalformedVariableByteInteger
				}
				continue
			}
			c.inLength = false
			limit := c.limit
			if c.complete == 0 && c.connectLimit > 0 && c.connectLimit < limit {
				limit = c.connectLimit
			}
			if 1+c.lenBytes+c.length > limit {
				c.tooLarge = 1 + c.lenBytes + c.length
				return packets.ErrPacketTooLarge
			}
			c.remaining = c.length
			// See readcheck.go.
			c.capturing = c.check
			c.headOnly = c.length > maxCheckedPacket && c.typeByte>>4 == packets.Publish
			c.body = c.body[:0]
			if c.length == 0 {
				c.complete++
				if c.capturing {
					if err := c.checkPacket(); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}
