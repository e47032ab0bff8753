package keylock

import (
	"sync"
	"testing"
	"time"
)

// One key is held by one at a time; another key is not held up by it; no
// mutex is left once all are released.
func TestLocks(t *testing.T) {
	var l Locks
	unlockA := l.Lock("a")

	// Another key is free while a is held.
	done := make(chan struct{})
	go func() { l.Lock("b")(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("key b waited for key a")
	}

	// The same key waits.
	got := make(chan struct{})
	go func() { u := l.Lock("a"); close(got); u() }()
	select {
	case <-got:
		t.Fatal("key a taken twice")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("key a not handed on after unlock")
	}

	// Many at once on few keys: mutual exclusion per key, nothing left.
	var wg sync.WaitGroup
	inside := make([]int, 4)
	var mu sync.Mutex
	for i := 0; i < 400; i++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			key := string(rune('p' + k))
			u := l.Lock(key)
			mu.Lock()
			inside[k]++
			n := inside[k]
			mu.Unlock()
			if n != 1 {
				t.Errorf("key %s held by %d at once", key, n)
			}
			mu.Lock()
			inside[k]--
			mu.Unlock()
			u()
		}(i % 4)
	}
	wg.Wait()
	if n := l.held(); n != 0 {
		t.Fatalf("%d mutexes kept after every unlock", n)
	}
}
