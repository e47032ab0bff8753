package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// resumeWatch opens a new watch of kv after the connection to NATS came
// back, from revision from on, for a watch to replace. A watch's ordered
// consumer finds out that its NATS server restarted only when two of its
// 5-second heartbeats are missing, and tries again as late if JetStream was
// not ready then: what other nodes wrote reached this node 10 to 20 s late
// (measured: a session taken over on another node stayed connected here so
// long). It is retried every 500 ms for 30 s (JetStream may still be
// starting); nil if it could not be opened. With from 1 (nothing seen
// yet) and updatesOnly the watch starts at new values.
func resumeWatch(ctx context.Context, h *Hook, kv jetstream.KeyValue, from uint64, updatesOnly bool) jetstream.KeyWatcher {
	opts := []jetstream.WatchOpt{jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from)}
	if from <= 1 && updatesOnly {
		opts = []jetstream.WatchOpt{jetstream.UpdatesOnly()}
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if ctx.Err() != nil || !h.Connected() {
			return nil
		}
		if w, err := kv.WatchAll(ctx, opts...); err == nil {
			return w
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return nil
		case <-h.done:
			return nil
		}
	}
	return nil
}

// kvWatch is a bucket's current watch and the latest revision it saw, so
// that it can be replaced by one that resumes after it.
type kvWatch struct {
	mu   sync.Mutex
	w    jetstream.KeyWatcher
	seen uint64
}

func (k *kvWatch) set(w jetstream.KeyWatcher) {
	k.mu.Lock()
	k.w = w
	k.mu.Unlock()
}

// saw records that the watch delivered revision rev.
func (k *kvWatch) saw(rev uint64) {
	k.mu.Lock()
	k.seen = max(k.seen, rev)
	k.mu.Unlock()
}

// resume replaces the watch of kv once the connection to NATS is back
// (resumeWatch), from the revision after the last one seen, and runs the
// new one in a goroutine of its own.
func (k *kvWatch) resume(ctx context.Context, h *Hook, kv jetstream.KeyValue, updatesOnly bool, run func(jetstream.KeyWatcher)) {
	k.mu.Lock()
	from := k.seen + 1
	k.mu.Unlock()
	w := resumeWatch(ctx, h, kv, from, updatesOnly)
	if w == nil {
		return
	}
	k.mu.Lock()
	old := k.w
	k.w = w
	k.mu.Unlock()
	if old != nil {
		_ = old.Stop()
	}
	go run(w)
}
