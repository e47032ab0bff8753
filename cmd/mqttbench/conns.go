package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// idleResult is the broker's memory with n idle MQTT connections open.
type idleResult struct {
	opened              int
	rssBefore, rssAfter int64 // KiB
	err                 error
}

// runIdle opens n connections (CONNECT/CONNACK, keep-alive off; with
// active, each then subscribes, publishes and acknowledges one message, see
// exercise), waits for the broker's RSS to settle, reads it, and closes them
// all.
func runIdle(ctx context.Context, t *target, n, conc int, active bool, connTO, settle, hold time.Duration, runID string) idleResult {
	var res idleResult
	if brokerPID <= 0 {
		res.err = fmt.Errorf("idle needs --pid of the broker")
		return res
	}
	var err error
	if res.rssBefore, err = procRSS(brokerPID); err != nil {
		res.err = err
		return res
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				closeHard(c)
			}
		}
	}()
	var firstErr error
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := t.connect(ctx, fmt.Sprintf("mb-%s-i%d", runID, i), connTO)
				if err == nil && active {
					if err = c.exercise(fmt.Sprintf("mb/%s/i%d", runID, i), connTO); err != nil {
						closeHard(c)
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			res.opened++
		}
	}
	res.err = firstErr
	// RSS settles once the broker has touched what each connection holds.
	prev := int64(-1)
	end := time.Now().Add(settle)
	for {
		time.Sleep(500 * time.Millisecond)
		rss, err := procRSS(brokerPID)
		if err != nil {
			res.err = err
			return res
		}
		res.rssAfter = rss
		if prev >= 0 && abs(rss-prev) <= rss/200 || time.Now().After(end) {
			break
		}
		prev = rss
	}
	if hold > 0 {
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
	}
	return res
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// connectResult is the rate of complete MQTT connections (with the TLS
// handshake on ssl:// and wss://).
type connectResult struct {
	done    int
	elapsed time.Duration
	err     error
	errs    int64
}

func runConnect(ctx context.Context, t *target, n, conc int, connTO, limit time.Duration, runID string) connectResult {
	var res connectResult
	var next, fails atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	var done atomic.Int64
	deadline := time.Now().Add(limit)
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || time.Now().After(deadline) || ctx.Err() != nil {
					return
				}
				c, err := t.connect(ctx, fmt.Sprintf("mb-%s-c%d", runID, i), connTO)
				if err != nil {
					fails.Add(1)
					mu.Lock()
					if res.err == nil {
						res.err = err
					}
					mu.Unlock()
					continue
				}
				c.Write([]byte{pktDisconn << 4, 0})
				closeHard(c)
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.done = int(done.Load())
	res.errs = fails.Load()
	return res
}
