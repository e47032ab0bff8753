package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

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

// resume replaces the watch of kv once the connection to NATS is back,
// with one that starts after the last revision seen (at new values if
// none was seen and updatesOnly), and runs the new one in a goroutine of
// its own. A watch's ordered consumer finds out that its NATS server
// restarted only when two of its 5-second heartbeats are missing, and tries
// again as late if JetStream was not ready then: what other nodes wrote
// reached this node 10 to 20 s late (measured: a session taken over on
// another node stayed connected here so long). Opening is retried every
// 500 ms for 30 s, while JetStream may still be starting.
func (k *kvWatch) resume(ctx context.Context, h *Hook, kv jetstream.KeyValue, updatesOnly bool, run func(jetstream.KeyWatcher)) {
	k.mu.Lock()
	from := k.seen + 1
	k.mu.Unlock()
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
