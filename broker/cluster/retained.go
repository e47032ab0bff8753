package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Retained messages are kept in the JetStream key-value bucket
// <prefix>_retained (one value per topic, no history): a local retained
// publish is written there, and every node watches the bucket and keeps its
// broker's retained messages equal to it, so a subscriber on any node gets
// the latest one and an empty retained publish clears it everywhere
// [MQTT-3.3.1-6] [MQTT-3.3.1-7]. The bucket orders concurrent writes from
// different nodes; all nodes end up with the one it kept last.
type retained struct {
	mu       sync.Mutex
	kv       jetstream.KeyValue
	starting bool
	local    bool // the bucket cannot be had (no JetStream): retained stays per node
	cancel   context.CancelFunc
	watch    kvWatch

	loadOnce sync.Once
	loaded   chan struct{}
	initOnce sync.Once
}

// storedMessage is a bucket value.
type storedMessage struct {
	Header    nats.Header `json:"h,omitempty"`
	Payload   []byte      `json:"p"`
	ExpiresAt int64       `json:"x,omitempty"` // unix seconds; 0 = never
}

func (r *retained) init() {
	r.initOnce.Do(func() { r.loaded = make(chan struct{}) })
}

// reconnected opens the bucket and starts watching it, once.
func (r *retained) reconnected(h *Hook, nc *nats.Conn) {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kv != nil || r.starting || nc == nil {
		return
	}
	r.starting = true
	go r.open(h, nc)
}

func (r *retained) open(h *Hook, nc *nats.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		r.mu.Lock()
		r.starting = false
		if r.kv == nil {
			cancel()
		}
		r.mu.Unlock()
	}()
	js, err := jetstream.New(nc)
	if err == nil {
		var kv jetstream.KeyValue
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err = js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
			Bucket:      h.prefix + "_retained",
			Description: "caddy-mqtt retained messages, one per topic",
			History:     1,
		})
		ccancel()
		if err == nil {
			var w jetstream.KeyWatcher
			if w, err = kv.WatchAll(ctx); err == nil {
				r.mu.Lock()
				r.kv, r.cancel = kv, cancel
				r.mu.Unlock()
				r.watch.set(ctx, kv, false, w, func(w jetstream.KeyWatcher) { r.follow(h, w) })
				// Before the watch, which ends Init's wait: a session
				// established before the bucket is open would not be
				// claimed.
				if err := h.own.open(ctx, h, js); err != nil {
					h.log.Error("mqtt cluster: no session takeover across nodes", "node", h.cfg.Node, "error", err)
				} else {
					go h.reclaim() // sessions of clients that came before NATS
				}
				go r.follow(h, w)
				go h.qs.open(h)
				return
			}
		}
	}
	h.log.Error("mqtt cluster: retained messages stay local to this node: the NATS server needs JetStream",
		"node", h.cfg.Node, "error", err)
	r.mu.Lock()
	r.local = true
	r.mu.Unlock()
	r.loadOnce.Do(func() { close(r.loaded) })
}

// follow applies the bucket's values as the watch delivers them.
func (r *retained) follow(h *Hook, w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e == nil { // all values so far
			r.loadOnce.Do(func() { close(r.loaded) })
			continue
		}
		r.watch.saw(e.Revision())
		r.apply(h, e)
	}
}

func (r *retained) apply(h *Hook, e jetstream.KeyValueEntry) {
	topic, err := base64.RawURLEncoding.DecodeString(e.Key())
	if err != nil || !forwarded(string(topic)) {
		return
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
		TopicName:   string(topic),
		Created:     e.Created().Unix(),
	}
	if e.Operation() == jetstream.KeyValuePut {
		var sm storedMessage
		if json.Unmarshal(e.Value(), &sm) != nil {
			return
		}
		if sm.ExpiresAt > 0 && sm.ExpiresAt <= time.Now().Unix() {
			return
		}
		decodeHeader(sm.Header, &pk)
		pk.FixedHeader.Retain = true
		pk.Payload = sm.Payload
		pk.Expiry = sm.ExpiresAt
		pk.Origin = h.injector.ID
	}
	// An empty payload removes it [MQTT-3.3.1-6].
	h.srv.Topics.RetainMessage(pk)
}

var errNoBucket = errors.New("retained-message bucket not open")

// put writes a local retained publish to the bucket, before the publisher
// is acknowledged.
func (r *retained) put(h *Hook, pk *packets.Packet, now time.Time) error {
	r.mu.Lock()
	kv, local := r.kv, r.local
	r.mu.Unlock()
	if kv == nil && local {
		return nil // logged when the bucket could not be opened
	}
	if kv == nil {
		return errNoBucket
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := base64.RawURLEncoding.EncodeToString([]byte(pk.TopicName))
	if len(pk.Payload) == 0 {
		return kv.Delete(ctx, key)
	}
	sm := storedMessage{Header: nats.Header{}, Payload: pk.Payload}
	encodeHeader(sm.Header, pk, now)
	sm.Header.Del(hdrExpiry)
	if left := expiryLeft(pk, now); left > 0 {
		sm.ExpiresAt = now.Unix() + left
	}
	b, err := json.Marshal(sm)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, key, b)
	return err
}

// waitLoaded waits until the bucket's values are applied (or d passes), so
// that the first subscribers get them.
func (r *retained) waitLoaded(d time.Duration) {
	r.init()
	select {
	case <-r.loaded:
	case <-time.After(d):
	}
}

func (r *retained) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
}
