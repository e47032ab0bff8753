package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvWatch is a bucket's current watch and the latest revision it saw, so
// that it can be replaced by one that resumes after it, with what that
// takes: the bucket, its life, and the function that follows a watch.
type kvWatch struct {
	mu          sync.Mutex
	w           jetstream.KeyWatcher
	seen        uint64
	kv          jetstream.KeyValue
	ctx         context.Context
	updatesOnly bool // a watch from no revision seen starts at new values
	run         func(jetstream.KeyWatcher)
}

// set records w, the first watch of kv; the caller runs it. resume starts
// its replacements with run.
func (k *kvWatch) set(ctx context.Context, kv jetstream.KeyValue, updatesOnly bool, w jetstream.KeyWatcher, run func(jetstream.KeyWatcher)) {
	k.mu.Lock()
	k.w, k.kv, k.ctx, k.updatesOnly, k.run = w, kv, ctx, updatesOnly, run
	k.mu.Unlock()
}

// saw records that the watch delivered revision rev.
func (k *kvWatch) saw(rev uint64) {
	k.mu.Lock()
	k.seen = max(k.seen, rev)
	k.mu.Unlock()
}

// resume replaces the watch once the connection to NATS is back, with one
// that starts after the last revision seen (at new values if none was seen
// and updatesOnly), and runs the new one in a goroutine of its own; it does
// nothing before set. A watch's ordered consumer finds out that its NATS server
// restarted only when two of its 5-second heartbeats are missing, and tries
// again as late if JetStream was not ready then: what other nodes wrote
// reached this node 10 to 20 s late (measured: a session taken over on
// another node stayed connected here so long). Opening is retried every
// 500 ms for 30 s, while JetStream may still be starting.
func (k *kvWatch) resume(h *Hook) {
	k.mu.Lock()
	from, kv, ctx, updatesOnly, run := k.seen+1, k.kv, k.ctx, k.updatesOnly, k.run
	k.mu.Unlock()
	if kv == nil {
		return
	}
	opts := []jetstream.WatchOpt{jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from)}
	if from == 1 && updatesOnly {
		opts = []jetstream.WatchOpt{jetstream.UpdatesOnly()}
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if ctx.Err() != nil || !h.Connected() {
			return
		}
		if w, err := kv.WatchAll(ctx, opts...); err == nil {
			k.mu.Lock()
			old := k.w
			k.w = w
			k.mu.Unlock()
			if old != nil {
				_ = old.Stop()
			}
			go run(w)
			return
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return
		case <-h.done:
			return
		}
	}
}
