// Package keylock provides a mutex per key (a client id), kept only while
// someone holds or waits for it, so that a broker seeing millions of client
// ids over its life keeps no lock for those not in use.
package keylock

import "sync"

// Locks is a set of mutexes, one per key. The zero value is ready to use.
type Locks struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	sync.Mutex
	users int // holding or waiting
}

// Lock takes key's mutex, waiting while another holds it, and returns the
// function that releases it.
func (l *Locks) Lock(key string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*entry)
	}
	e := l.m[key]
	if e == nil {
		e = new(entry)
		l.m[key] = e
	}
	e.users++
	l.mu.Unlock()

	e.Lock()
	return func() {
		e.Unlock()
		l.mu.Lock()
		if e.users--; e.users == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}

// held reports how many keys have a mutex (for tests).
func (l *Locks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
