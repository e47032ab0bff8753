package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// loadConfig is one throughput, latency, fan-out or fan-in run.
type loadConfig struct {
	pubs, subs int
	qos        byte
	size       int
	duration   time.Duration
	count      int     // messages per publisher at most
	rate       float64 // total msg/s over all publishers; 0 = as fast as the window allows
	window     int     // messages published and not yet received by the slowest subscriber
	inflight   int     // unacknowledged QoS 1/2 publishes per publisher
	batch      int     // messages per write when not rate-limited
	drain      time.Duration
	connTO     time.Duration
	latency    bool
}

// loadState is shared by the publishers and subscribers of one run.
type loadState struct {
	cfg     loadConfig
	topic   string
	sent    atomic.Int64
	subs    []*subscriber
	stop    chan struct{}
	errOnce sync.Once
	err     error
	errs    atomic.Int64
	closing atomic.Bool
}

func (st *loadState) fail(err error) {
	if st.closing.Load() || errors.Is(err, net.ErrClosed) {
		return
	}
	st.errs.Add(1)
	st.errOnce.Do(func() { st.err = err })
}

// received is the number of messages delivered to all subscribers.
func (st *loadState) received() int64 {
	var n int64
	for _, s := range st.subs {
		n += s.n.Load()
	}
	return n
}

// slowest is the number of messages the slowest subscriber has received
// (all subscribe to the same topic); with no subscriber, none.
func (st *loadState) slowest() int64 {
	if len(st.subs) == 0 {
		return st.sent.Load()
	}
	m := st.subs[0].n.Load()
	for _, s := range st.subs[1:] {
		m = min(m, s.n.Load())
	}
	return m
}

type subscriber struct {
	n   atomic.Int64 // messages received
	_   [56]byte     // n on a cache line of its own
	c   *mqttConn
	lat []int64 // nanoseconds, latency runs only
}

func (s *subscriber) run(st *loadState, done *sync.WaitGroup) {
	defer done.Done()
	for {
		h, body, err := readPacket(s.c.r, &s.c.rbuf, maxPacket)
		if err != nil {
			if err != io.EOF {
				st.fail(fmt.Errorf("subscriber: %w", err))
			} else {
				st.fail(errors.New("subscriber: connection closed by the broker"))
			}
			return
		}
		switch h >> 4 {
		case pktPublish:
			qos, pid, payload, err := parsePublish(h, body)
			if err != nil {
				st.fail(err)
				return
			}
			if st.cfg.latency && len(payload) >= 8 && len(s.lat) < cap(s.lat) {
				ts := int64(binary.BigEndian.Uint64(payload))
				s.lat = append(s.lat, time.Now().UnixNano()-ts)
			}
			s.n.Add(1)
			switch qos {
			case 1:
				s.c.wbuf = appendAck(s.c.wbuf, pktPuback, pid)
			case 2:
				s.c.wbuf = appendAck(s.c.wbuf, pktPubrec, pid)
			}
		case pktPubrel:
			if len(body) >= 2 {
				s.c.wbuf = appendAck(s.c.wbuf, pktPubcomp, binary.BigEndian.Uint16(body))
			}
		}
		// Acknowledgements go out in one write per read burst.
		if len(s.c.wbuf) > 0 && s.c.r.Buffered() == 0 {
			if _, err := s.c.Write(s.c.wbuf); err != nil {
				st.fail(err)
				return
			}
			s.c.wbuf = s.c.wbuf[:0]
		}
	}
}

type publisher struct {
	c   *mqttConn
	id  int
	mu  sync.Mutex // the reader writes PUBREL
	sem chan struct{}
}

func (p *publisher) write(b []byte) error {
	p.mu.Lock()
	_, err := p.c.Write(b)
	p.mu.Unlock()
	return err
}

// readAcks releases the in-flight window on PUBACK / PUBCOMP and answers
// PUBREC with PUBREL.
func (p *publisher) readAcks(st *loadState, done *sync.WaitGroup) {
	defer done.Done()
	var out []byte
	for {
		h, body, err := readPacket(p.c.r, &p.c.rbuf, maxPacket)
		if err != nil {
			st.fail(fmt.Errorf("publisher: %v", err))
			return
		}
		switch h >> 4 {
		case pktPuback, pktPubcomp:
			select {
			case <-p.sem:
			default:
			}
		case pktPubrec:
			if len(body) >= 2 {
				out = appendAck(out, pktPubrel, binary.BigEndian.Uint16(body))
			}
		}
		if len(out) > 0 && p.c.r.Buffered() == 0 {
			if err := p.write(out); err != nil {
				st.fail(err)
				return
			}
			out = out[:0]
		}
	}
}

func (p *publisher) run(st *loadState, deadline time.Time, done *sync.WaitGroup) {
	defer done.Done()
	cfg := st.cfg
	payload := make([]byte, cfg.size)
	for i := range payload[min(16, len(payload)):] {
		payload[16+i] = byte(i)
	}
	if len(payload) >= 16 {
		binary.BigEndian.PutUint32(payload[8:], uint32(p.id))
	}
	perMsg := int64(max(1, cfg.subs))
	// At most 100,000 deliveries outstanding: with 1000 subscribers, 100
	// messages, which every broker's per-client buffers hold.
	window := min(int64(cfg.window), max(10, 100_000/perMsg))
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.pubs) / cfg.rate)
	}
	next := time.Now()
	var buf []byte
	flush := func() bool {
		if len(buf) == 0 {
			return true
		}
		err := p.write(buf)
		buf = buf[:0]
		if err != nil {
			st.fail(err)
			return false
		}
		return true
	}
	seq := 0
	for seq < cfg.count {
		now := time.Now()
		if now.After(deadline) {
			break
		}
		if interval > 0 {
			if d := next.Sub(now); d > 0 {
				time.Sleep(d)
			}
			next = next.Add(interval)
		}
		// QoS 0 has no flow control in MQTT, and a broker's queue per
		// subscriber is bounded (mosquitto: 1000 messages): keep at most
		// window messages between the publishers and the slowest
		// subscriber, so that a broker is measured at the rate it
		// delivers, not at the rate it drops.
		for st.sent.Load()-st.slowest() > window {
			if time.Now().After(deadline) {
				flush()
				return
			}
			time.Sleep(50 * time.Microsecond)
		}
		n := cfg.batch
		if interval > 0 {
			n = 1
		}
		for k := 0; k < n && seq < cfg.count; k++ {
			if cfg.qos > 0 {
				select {
				case p.sem <- struct{}{}:
				default:
					if !flush() {
						return
					}
					select {
					case p.sem <- struct{}{}:
					case <-st.stop:
						return
					}
				}
			}
			if len(payload) >= 8 {
				binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
			}
			buf = appendPublishHeader(buf, st.topic, cfg.qos, uint16(seq%65535+1), len(payload))
			buf = append(buf, payload...)
			seq++
			st.sent.Add(1)
			if len(buf) >= 64<<10 {
				break
			}
		}
		if !flush() {
			return
		}
	}
}

// loadResult is what a load run measured.
type loadResult struct {
	sent, expected, delivered int64
	elapsed                   time.Duration
	lat                       []int64
	errs                      int64
	err                       error
	cpu0, cpu1                cpuSample
}

func runLoad(ctx context.Context, t *target, cfg loadConfig, runID string) (*loadResult, error) {
	st := &loadState{cfg: cfg, topic: "mqttbench/" + runID + "/t", stop: make(chan struct{})}
	var conns []*mqttConn
	defer func() {
		st.closing.Store(true)
		for _, c := range conns {
			c.Write([]byte{pktDisconn << 4, 0})
			closeHard(c)
		}
	}()
	// Connect subscribers first, then publishers, 32 at a time.
	subs := make([]*subscriber, cfg.subs)
	pubs := make([]*publisher, cfg.pubs)
	var mu sync.Mutex
	var firstErr error
	connectAll := func(n int, f func(i int) error) {
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func(i int) {
				defer func() { <-sem; wg.Done() }()
				if err := f(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
	}
	perSubLat := 0
	if cfg.latency {
		perSubLat = int(min(float64(cfg.count*cfg.pubs), cfg.rate*cfg.duration.Seconds()*1.1+1000))
	}
	connectAll(cfg.subs, func(i int) error {
		c, err := t.connect(ctx, fmt.Sprintf("mb-%s-s%d", runID, i), cfg.connTO)
		if err != nil {
			return err
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		if err := c.subscribe(st.topic, cfg.qos, cfg.connTO); err != nil {
			return err
		}
		subs[i] = &subscriber{c: c, lat: make([]int64, 0, perSubLat)}
		return nil
	})
	connectAll(cfg.pubs, func(i int) error {
		c, err := t.connect(ctx, fmt.Sprintf("mb-%s-p%d", runID, i), cfg.connTO)
		if err != nil {
			return err
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		pubs[i] = &publisher{c: c, id: i, sem: make(chan struct{}, max(1, cfg.inflight))}
		return nil
	})
	if firstErr != nil {
		return nil, firstErr
	}
	st.subs = subs
	var readers, writers sync.WaitGroup
	for _, s := range subs {
		readers.Add(1)
		go s.run(st, &readers)
	}
	for _, p := range pubs {
		readers.Add(1)
		go p.readAcks(st, &readers)
	}
	// A subscription is in place once its SUBACK is back; give brokers that
	// apply it asynchronously a moment all the same.
	time.Sleep(100 * time.Millisecond)

	cpu0 := sampleCPU()
	start := time.Now()
	deadline := start.Add(cfg.duration)
	for _, p := range pubs {
		writers.Add(1)
		go p.run(st, deadline, &writers)
	}
	writers.Wait()
	perMsg := int64(max(1, cfg.subs))
	// Drain: until everything is delivered, or nothing more arrives for a
	// quarter of cfg.drain (at least a second), or cfg.drain has passed.
	quiet := max(time.Second, cfg.drain/4)
	expected := st.sent.Load() * perMsg
	last, lastChange := st.received(), time.Now()
	drainEnd := time.Now().Add(cfg.drain)
	end := time.Now()
	for {
		n := st.received()
		now := time.Now()
		if n != last {
			last, lastChange = n, now
		}
		if n >= expected {
			end = now
			break
		}
		if now.Sub(lastChange) > quiet || now.After(drainEnd) || st.errs.Load() > 0 && now.Sub(lastChange) > 100*time.Millisecond {
			end = lastChange
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	cpu1 := sampleCPU()
	close(st.stop)
	res := &loadResult{sent: st.sent.Load(), expected: expected, delivered: st.received(),
		elapsed: end.Sub(start), errs: st.errs.Load()}
	if cfg.latency {
		for _, s := range subs {
			res.lat = append(res.lat, s.lat...)
		}
		slices.Sort(res.lat)
	}
	st.closing.Store(true)
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	readers.Wait()
	res.err = st.err
	res.cpu0, res.cpu1 = cpu0, cpu1
	return res, nil
}

func percentile(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / 1e3
}
