package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// TestSlowConsumer: a subscriber that stops reading must not slow the
// others, its queue is bounded (max_queued_messages, 1000 by default) and
// what it misses is counted in $SYS/broker/messages/dropped, and the
// broker's memory stays bounded while a publisher storms QoS 0 messages.
//
// The same storm runs twice, first with the third subscriber reading, then
// with it stalled; the other subscribers' throughput in the second run,
// relative to the first, is logged and must stay above 40% (on a quiet
// machine it is about 1; the bound leaves room for CI noise).
func TestSlowConsumer(t *testing.T) {
	const (
		stormFor = 1500 * time.Millisecond // per run; 3 runs of each kind
		payload  = 1024
		// Memory the storm may add to Caddy's RSS. The stalled client can
		// hold at most 1000 queued messages (about 1.3 MiB with 1 KiB
		// payloads) plus the kernel's socket buffers, which are not in RSS.
		rssBound = 64 << 20
	)
	c := startCaddy(t, "sys_interval 1s")
	obs := c.ConnectV5(t, "tcp", "overload-observer")
	dropped := sysWatcher(t, obs, "$SYS/broker/messages/dropped")

	// The healthy subscribers, one per protocol version on two doors.
	type counter struct {
		name string
		n    atomic.Int64
	}
	var healthy []*counter
	v5 := c.ConnectV5(t, "tcp", "overload-sub5")
	v5.Subscribe(t, "overload/#", 0)
	v3 := c.ConnectV3(t, "ws", "overload-sub3")
	v3.Subscribe(t, "overload/#", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, s := range []receiver{v5, v3} {
		cnt := &counter{name: s.name()}
		healthy = append(healthy, cnt)
		go func() {
			for ctx.Err() == nil {
				if _, _, ok := s.next(100 * time.Millisecond); ok {
					cnt.n.Add(1)
				}
			}
		}()
	}
	pub := c.ConnectV5(t, "tcp", "overload-pub")

	rss0 := c.RSS()
	// storm publishes QoS 0 messages as fast as the broker takes them: one
	// QoS 1 message in every 50 waits for its PUBACK, so the publisher is
	// paced by the broker's processing rather than by its socket. It
	// returns how many messages were published and the RSS peak seen.
	storm := func(label string) (sent int64, perSecond []float64, peak int64) {
		for _, h := range healthy {
			h.n.Store(0)
		}
		body := bytes.Repeat([]byte("x"), payload)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Add(1)
		go func() { // RSS sampler
			defer wg.Done()
			for {
				if r := c.RSS(); r > peak {
					peak = r
				}
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		start := time.Now()
		for time.Since(start) < stormFor {
			qos := byte(0)
			if sent%50 == 49 {
				qos = 1
			}
			pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := pub.Client.Publish(pctx, &paho.Publish{Topic: "overload/storm", QoS: qos, Payload: body})
			pcancel()
			if err != nil {
				t.Fatalf("%s: publish %d: %v", label, sent, err)
			}
			sent++
		}
		elapsed := time.Since(start)
		// Let the healthy subscribers drain what is on its way.
		time.Sleep(500 * time.Millisecond)
		close(stop)
		wg.Wait()
		for _, h := range healthy {
			got := h.n.Load()
			perSecond = append(perSecond, float64(got)/elapsed.Seconds())
			t.Logf("%s: %s received %d of %d (%.0f msg/s)", label, h.name, got, sent, float64(got)/elapsed.Seconds())
		}
		t.Logf("%s: published %d in %v (%.0f msg/s); caddy RSS peak %d MiB (before %d MiB)",
			label, sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), peak>>20, rss0>>20)
		return sent, perSecond, peak
	}

	// The subscriber that will stall: a raw socket with a small receive
	// buffer, keepalive 0 (so the broker never times it out). In the first
	// run it reads everything, like the others; in the second it stops
	// reading. The comparison is then only about stalling, not about one
	// subscriber more or less.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TCP))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	connect := connectPacket(4, "overload-stalled")
	connect[10], connect[11] = 0, 0 // keepalive 0
	stalled := &raw{conn: conn, v: 4, door: "tcp", id: "overload-stalled"}
	stalled.send(t, connect)
	if typ, body := stalled.next(t); typ != 0x20 || body[1] != 0 {
		t.Fatalf("stalled subscriber: CONNACK %#x %x", typ, body)
	}
	stalled.subscribe(t, "overload/#")

	// startReading makes the third subscriber read (and discard) until the
	// returned function is called.
	startReading := func() (stall func()) {
		var stop atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 64<<10)
			for !stop.Load() {
				_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				_, _ = conn.Read(buf)
			}
		}()
		return func() { stop.Store(true); <-done }
	}

	// Runs with the third subscriber reading and stalled alternate, so
	// that load from elsewhere on the machine hits both kinds alike.
	base := make([]float64, len(healthy))
	with := make([]float64, len(healthy))
	var sent, droppedBefore, peak int64
	for round := range 3 {
		stall := startReading()
		_, ps, _ := storm(fmt.Sprintf("round %d, third subscriber reading", round))
		stall()
		if round == 0 {
			time.Sleep(1100 * time.Millisecond) // a fresh $SYS value
			droppedBefore = dropped.int(t)
		}
		n, ps2, p := storm(fmt.Sprintf("round %d, third subscriber stalled", round))
		for i := range healthy {
			base[i] += ps[i] / 3
			with[i] += ps2[i] / 3
		}
		sent += n
		peak = max(peak, p)
		if round < 2 {
			// Let it drain its queue before the next reading run.
			stall := startReading()
			time.Sleep(300 * time.Millisecond)
			stall()
		}
	}

	// The throughput of the others, relative to the run without.
	for i, h := range healthy {
		ratio := with[i] / base[i]
		t.Logf("%s: throughput ratio with/without the stalled subscriber: %.2f", h.name, ratio)
		if ratio < 0.4 {
			t.Errorf("%s: throughput fell to %.0f%% with a stalled subscriber", h.name, 100*ratio)
		}
	}
	if grown := peak - rss0; grown > rssBound {
		t.Errorf("caddy RSS grew by %d MiB during the storm, bound %d MiB", grown>>20, rssBound>>20)
	}

	// What the stalled subscriber missed is counted: everything but the
	// 1000 queued messages and what the socket buffers took, in each run.
	deadline := time.Now().Add(5 * time.Second)
	var d int64
	for {
		d = dropped.int(t) - droppedBefore
		if d >= sent/2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("$SYS/broker/messages/dropped grew by %d; %d messages were published while the subscriber was stalled", d, sent)
	if d < sent/2 {
		t.Errorf("dropped counter grew by %d, want at least half of the %d messages the stalled subscriber could not take", d, sent)
	}

	// The stalled subscriber is still connected (keepalive 0), and the
	// broker still serves normal clients.
	assertServing(t, c)
	cancel()
}
