package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// doorKeys remembers, for persistent sessions, the AuthKey of the door each
// came through last (ConnInfo.AuthKey), in a small file next to the store.
// mochi's store has no place for it, and a session restored after a restart
// has no connection to ask: without this, messages for it would be checked
// against the broker-wide ACL instead of its door's until it reconnects.
type doorKeys struct {
	mu   sync.Mutex
	path string
	m    map[string]string
}

// loadDoorKeys reads the file at path; a missing file is an empty one.
func loadDoorKeys(path string) (*doorKeys, error) {
	d := &doorKeys{path: path, m: make(map[string]string)}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &d.m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// get returns the door key recorded for a client id.
func (d *doorKeys) get(id string) string {
	if d == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[id]
}

// set records key for id ("" forgets it) and rewrites the file when that
// changes anything. The file is replaced whole (written, then renamed).
func (d *doorKeys) set(id, key string) error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m[id] == key {
		return nil
	}
	if key == "" {
		delete(d.m, id)
	} else {
		d.m[id] = key
	}
	b, err := json.Marshal(d.m)
	if err != nil {
		return err
	}
	tmp := d.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.path)
}
