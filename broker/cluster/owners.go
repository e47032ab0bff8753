package cluster

import (
	"context"
	"encoding/base64"
	"math"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
)

// Session takeover across nodes.
//
// A client id is claimed in the JetStream key-value bucket
// <prefix>_sessions (key: the client id in unpadded base64url, value: the
// claiming node) each time a session is established. Every node watches
// the bucket: when another node claims a client id later (a higher bucket
// revision) than this node did, the local connection of that client is
// closed with reason 0x8E, Session taken over [MQTT-3.1.4-3], as a
// takeover on one node does. The bucket orders concurrent claims: the last
// one stays connected.
//
// A node's own claim takes a round trip to NATS after the session is
// established here, and the watch delivers other nodes' claims whenever it
// gets them: an earlier claim seen late, while this node's was still on its
// way, closed the connection that had just replaced it. So a claim on its
// way is pending, and the other nodes' claims seen meanwhile are decided
// when its revision is known (settle).
type owners struct {
	mu    sync.Mutex
	kv    jetstream.KeyValue
	mine  map[string]uint64 // client id → revision of this node's claim, or claimPending
	late  map[string]uint64 // client id → latest other claim seen while this node's was pending
	watch kvWatch
}

// claimPending marks a claim being written.
const claimPending = math.MaxUint64

func (o *owners) open(ctx context.Context, h *Hook, js jetstream.JetStream) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
		Bucket:      h.prefix + "_sessions",
		Description: "caddy-mqtt: the node each client id is connected to",
		History:     1,
	})
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.kv = kv
	if o.mine == nil {
		o.mine, o.late = make(map[string]uint64), make(map[string]uint64)
	}
	o.mu.Unlock()
	o.watch.set(ctx, kv, true, w, func(w jetstream.KeyWatcher) { o.follow(h, w) })
	go o.follow(h, w)
	return nil
}

// claim records that cl's session is now on this node; it returns the
// previous claim (the claiming process: node id/boot nonce; "" if none).
func (o *owners) claim(h *Hook, cl *mqtt.Client) (prev string) {
	o.mu.Lock()
	kv := o.kv
	o.mu.Unlock()
	if kv == nil || !h.Connected() {
		return ""
	}
	o.mu.Lock()
	o.mine[cl.ID] = claimPending
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := ownerKey(cl.ID)
	if e, err := kv.Get(ctx, key); err == nil {
		prev = string(e.Value())
	}
	rev, err := kv.Put(ctx, key, []byte(h.src))
	if err != nil {
		h.warn.do(func() { h.log.Warn("mqtt cluster: cannot record the session's node", "client", cl.ID, "error", err) })
		rev = 0
	}
	if o.settle(cl.ID, rev) {
		go o.takeOver(h, cl.ID, "") // not in the client's own hook
	}
	return prev
}

// settle records this node's claim of client id at revision rev (0: not
// written); it reports whether another node claimed the id later, while
// this claim was pending.
func (o *owners) settle(id string, rev uint64) (takenOver bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	late := o.late[id]
	delete(o.late, id)
	switch cur, ok := o.mine[id]; {
	case !ok:
		return false // released meanwhile: the connection is gone
	case cur != claimPending:
		// Another connection of the id here claimed it at the same time
		// and settled first.
		o.mine[id] = max(cur, rev)
		return false
	}
	if rev == 0 || late > rev {
		delete(o.mine, id)
		return late > rev
	}
	o.mine[id] = rev
	return false
}

// other decides on another node's claim of client id at revision rev: it
// reports whether this node's connection of the id is taken over.
func (o *owners) other(id string, rev uint64) (takenOver bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	mine, ok := o.mine[id]
	switch {
	case ok && mine == claimPending:
		o.late[id] = max(o.late[id], rev)
		return false
	case ok && mine > rev:
		return false // an older claim, seen late
	}
	delete(o.mine, id)
	return true
}

// release forgets cl's claim once no session of its id is left here.
func (o *owners) release(h *Hook, cl *mqtt.Client) {
	if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur != cl {
		return // taken over on this node: the new connection's claim stays
	}
	o.mu.Lock()
	delete(o.mine, cl.ID)
	o.mu.Unlock()
}

// follow applies other nodes' claims as the watch delivers them.
func (o *owners) follow(h *Hook, w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e != nil {
			o.watch.saw(e.Revision())
		}
		if e == nil || e.Operation() != jetstream.KeyValuePut || string(e.Value()) == h.src ||
			strings.Contains(e.Key(), ".") { // a session's subscriptions (sessions.go)
			continue
		}
		id, err := base64.RawURLEncoding.DecodeString(e.Key())
		if err != nil {
			continue
		}
		if o.other(string(id), e.Revision()) {
			o.takeOver(h, string(id), string(e.Value()))
		}
	}
}

// takeOver closes this node's connection of client id, claimed by another
// node (node: the claim's value, "" when not known here).
func (o *owners) takeOver(h *Hook, id, node string) {
	cl, ok := h.srv.Clients.Get(id)
	if !ok || cl.Closed() || cl.Net.Inline {
		return
	}
	h.log.Info("mqtt cluster: session taken over on another node", "client", cl.ID, "node", node)
	// The session goes with the client (sessions.go).
	h.ho.setMoved(cl.ID)
	h.leave(cl)
	if cl.Properties.ProtocolVersion >= 5 {
		_ = h.srv.DisconnectClient(cl, packets.ErrSessionTakenOver)
	} else {
		cl.Stop(packets.ErrSessionTakenOver)
	}
}

// known reports whether this node has claimed client id, or is claiming it.
func (o *owners) known(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.mine[id]
	return ok
}

// bucket is the sessions bucket, nil before it is open.
func (o *owners) bucket() jetstream.KeyValue {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.kv
}

// owns reports whether this node holds the latest claim of client id.
func (o *owners) owns(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	rev, ok := o.mine[id]
	return ok && rev != claimPending
}

// ownerKey is a client id's key in the sessions bucket; subsKey the key
// of its subscriptions.
func ownerKey(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }
func subsKey(id string) string  { return ownerKey(id) + ".subs" }
