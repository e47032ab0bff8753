package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-mqtt/caddy-mqtt/broker/internal/keylock"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Persistent sessions follow their client to another node.
//
// When a persistent session leaves node A (its connection ends, or the
// same client id connects on node B), A creates a durable JetStream
// consumer for that session, <prefix>_sess_<hash of client id>, on the
// stream of QoS 1/2 messages (stream.go), filtered to the session's plain
// filters and starting SessionOverlap before the oldest message A still
// holds for it (or before that moment); its metadata carries A's node id
// and the session's subscriptions. A then drops its copy of the session.
// When the client connects on a node B other than A, B restores the
// subscriptions into the new session, delivers to that client alone what
// the consumer holds (what was published for it anywhere since it left
// A), and deletes the consumer. Back on A itself, the consumer is only
// deleted: A's own session has queued those messages already.
//
// B finds the consumer at once if the session had left A before; if not,
// it asks A on <prefix>_node.<hash of A's node id> to let go of it (A
// answers once it has, also for a session it restored from its storage
// after a restart) and waits for it. If nobody answers there, A is down:
// B makes the consumer itself, from what A wrote to the sessions bucket
// (the session's subscriptions, kept up to date on every SUBSCRIBE and
// UNSUBSCRIBE) and from A's own consumer, starting SessionOverlap before
// the last message A had acknowledged: what was published while A was
// down, and what A took in its last moments, reaches the client.
//
// Guarantees: at least once; messages of SessionOverlap before the move
// may come twice.
type handoff struct {
	mu       sync.Mutex
	moved    map[string]bool      // client ids handed to another node (takeover seen)
	adopting map[string]*adoption // client ids whose session is being taken from another node
	leaving  keylock.Locks        // one leave at a time per client id
	records  keylock.Locks        // one record write at a time per client id

	hold atomic.Int64 // tests: how long (ns) an adoption waits before it starts
}

// lockLeave serializes leave per client id: a leave still running when
// another node asks for the session must not recreate the consumer after
// that node has taken and deleted it.
func (ho *handoff) lockLeave(id string) (unlock func()) { return ho.leaving.Lock(id) }

// adoption counts the adoptions of one client id in progress (one per
// connection of the id here); done is closed when the last one ends.
type adoption struct {
	n    int
	done chan struct{}
}

// adopting marks id while its session is taken over (d=1, then d=-1): its
// record in the bucket is the old node's until then.
func (ho *handoff) setAdopting(id string, d int) {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	if ho.adopting == nil {
		ho.adopting = make(map[string]*adoption)
	}
	a := ho.adopting[id]
	if a == nil {
		a = &adoption{done: make(chan struct{})}
		ho.adopting[id] = a
	}
	if a.n += d; a.n <= 0 {
		delete(ho.adopting, id)
		close(a.done)
	}
}

func (ho *handoff) isAdopting(id string) bool {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	return ho.adopting[id] != nil
}

// adopted is closed once no adoption of id is in progress.
func (ho *handoff) adopted(id string) <-chan struct{} {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	if a := ho.adopting[id]; a != nil {
		return a.done
	}
	return closed
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (ho *handoff) setMoved(id string) {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	if ho.moved == nil {
		ho.moved = make(map[string]bool)
	}
	ho.moved[id] = true
}

// takeMoved reports (and forgets) whether id was handed to another node.
func (ho *handoff) takeMoved(id string) bool {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	ok := ho.moved[id]
	delete(ho.moved, id)
	return ok
}

// SessionOverlap is how far before a session left its node its consumer
// starts: messages of that window may be delivered twice, none is lost
// to the delay of the handoff.
const SessionOverlap = 5 * time.Second

const (
	metaNode = "caddy_mqtt_node"
	metaSubs = "caddy_mqtt_subscriptions"
)

func (h *Hook) sessionConsumer(clientID string) string {
	sum := sha256.Sum256([]byte(clientID))
	return strings.ReplaceAll(h.prefix, ".", "_") + "_sess_" + hex.EncodeToString(sum[:12])
}

// persistent reports whether cl's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// sessionRecord is a persistent session's subscriptions in the sessions
// bucket (key: subsKey), for a node that adopts it after its node died.
type sessionRecord struct {
	Src  string                 `json:"src"` // the process that owns the session
	Subs []packets.Subscription `json:"subs"`
}

// recordSubsNow records cl's subscriptions after a SUBSCRIBE or
// UNSUBSCRIBE, before mochi acknowledges it: a subscription acknowledged
// is one a node taking the session over after this node died restores.
// While the session is adopted from another node the record is still that
// node's; it waits for the adoption (adoptWait, or half the keepalive, at
// most) to restore the old subscriptions first.
func (h *Hook) recordSubsNow(cl *mqtt.Client) {
	if !cl.Net.Inline && !cl.Closed() && persistent(cl) && h.ho.isAdopting(cl.ID) {
		wait := adoptWait
		if ka := cl.State.Keepalive; ka > 0 {
			// mochi reads on with a deadline of one and a half keepalives
			// from the SUBSCRIBE: a longer wait would end the connection.
			wait = min(wait, time.Duration(ka)*time.Second/2)
		}
		select {
		case <-h.ho.adopted(cl.ID):
		case <-time.After(wait):
			// The adoption records them when it ends.
		case <-h.done:
		}
	}
	h.recordSubs(cl)
}

// adoptWait bounds how long a SUBSCRIBE waits for its session's adoption
// from another node, which asks that node (5 s) and then waits for it to
// let go (10 s); half the client's keepalive bounds it too.
const adoptWait = 15 * time.Second

// recordSubs writes cl's subscriptions to the bucket, if this node owns
// its persistent session.
func (h *Hook) recordSubs(cl *mqtt.Client) {
	kv := h.own.bucket()
	if kv == nil || cl.Net.Inline || !persistent(cl) || !h.own.owns(cl.ID) || !h.Connected() || h.ho.isAdopting(cl.ID) {
		return
	}
	// One write at a time, each with the subscriptions of its moment: two
	// concurrent ones could land in the wrong order.
	defer h.ho.records.Lock(cl.ID)()
	var list []packets.Subscription
	for _, s := range cl.State.Subscriptions.GetAll() {
		list = append(list, s)
	}
	b, err := json.Marshal(sessionRecord{Src: h.src, Subs: list})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, subsKey(cl.ID), b); err != nil {
		h.warn.do(func() {
			h.log.Warn("mqtt cluster: cannot record the session's subscriptions", "client", cl.ID, "error", err)
		})
	}
}

// forgetSubs deletes the record of a session of this node that ends
// (its subscriptions, which no other node is to take).
func (h *Hook) forgetSubs(cl *mqtt.Client) {
	kv := h.own.bucket()
	if kv == nil || cl.Net.Inline || !h.Connected() {
		return
	}
	id := cl.ID
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e, err := kv.Get(ctx, subsKey(id))
		if err != nil {
			return
		}
		var rec sessionRecord
		if json.Unmarshal(e.Value(), &rec) == nil && rec.Src == h.src {
			// Unless another node has written it since.
			_ = kv.Delete(ctx, subsKey(id), jetstream.LastRevision(e.Revision()))
		}
	}()
}

// nodeSubject is where node answers handoff requests.
func (h *Hook) nodeSubject(node string) string {
	sum := sha256.Sum256([]byte(node))
	return h.prefix + "_node." + hex.EncodeToString(sum[:12])
}

// serveHandoff answers another node that asks for a session (the request
// holds the client id): a session held here and not connected is handed
// over (leave) before the answer. A connected one is left by the owners
// watcher, which sees the new claim.
func (h *Hook) serveHandoff(m *nats.Msg) {
	id := string(m.Data)
	if cl, ok := h.srv.Clients.Get(id); ok && !cl.Net.Inline && cl.Closed() && persistent(cl) {
		unlock := h.ho.lockLeave(id)
		h.leaveLocked(cl)
		h.discard(cl)
		unlock()
	}
	_ = m.Respond(nil)
}

// discard drops this node's copy of a session that went to another node.
func (h *Hook) discard(cl *mqtt.Client) {
	if cur, ok := h.srv.Clients.Get(cl.ID); !ok || cur != cl {
		return
	}
	cl.ClearInflights()
	h.srv.UnsubscribeClient(cl)
	h.srv.Clients.Delete(cl.ID)
}

// leave records cl's session in a consumer of its own as it leaves this
// node.
func (h *Hook) leave(cl *mqtt.Client) {
	defer h.ho.lockLeave(cl.ID)()
	h.leaveLocked(cl)
}

func (h *Hook) leaveLocked(cl *mqtt.Client) {
	js := h.qs.ready()
	if js == nil || !persistent(cl) {
		return
	}
	if cur, ok := h.srv.Clients.Get(cl.ID); !ok || cur != cl {
		return // handed over already, or taken over on this node
	}
	subs := cl.State.Subscriptions.GetAll()
	var list []packets.Subscription
	for _, s := range subs {
		list = append(list, s)
	}
	// From the oldest message still waiting for the client here.
	from := time.Now()
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if t := time.Unix(pk.Created, 0); pk.Created > 0 && t.Before(from) {
			from = t
		}
	}
	if err := h.sessionConsumerFrom(js, cl.ID, list, h.cfg.Node, from.Add(-SessionOverlap), cl.Properties); err != nil {
		h.warn.do(func() {
			h.log.Warn("mqtt cluster: cannot record the session for other nodes", "client", cl.ID, "error", err)
		})
	}
}

// sessionConsumerFrom (re)creates the session consumer of client id,
// holding the messages for subs stored since start.
func (h *Hook) sessionConsumerFrom(js jetstream.JetStream, id string, subs []packets.Subscription, node string, start time.Time, props mqtt.ClientProperties) error {
	var subjects []string
	for _, s := range subs {
		if _, _, shared := splitShared(s.Filter); !shared {
			subjects = append(subjects, FilterSubjects(h.qprefix(), s.Filter)...)
		}
	}
	if len(subjects) == 0 {
		return nil
	}
	b, err := json.Marshal(subs)
	if err != nil {
		return err
	}
	inactive := StreamMaxAge
	if props.ProtocolVersion == 5 && props.Props.SessionExpiryInterval > 0 {
		inactive = min(time.Duration(props.Props.SessionExpiryInterval)*time.Second, StreamMaxAge)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name := h.sessionConsumer(id)
	_ = js.DeleteConsumer(ctx, h.streamName(), name) // an older one, never taken
	_, err = js.CreateConsumer(ctx, h.streamName(), jetstream.ConsumerConfig{
		Durable:           name,
		Description:       "caddy-mqtt persistent session",
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &start,
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           30 * time.Second,
		FilterSubjects:    reduceSubjects(subjects),
		InactiveThreshold: inactive,
		Metadata:          map[string]string{metaNode: node, metaSubs: string(b)},
	})
	return err
}

// orphan makes the session consumer of cl's client id for a session whose
// node (prev: the process that owned it) is down, from the session's record
// and that node's consumer.
func (h *Hook) orphan(js jetstream.JetStream, cl *mqtt.Client, prev string) jetstream.Consumer {
	kv := h.own.bucket()
	if kv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node, _, _ := strings.Cut(prev, "/")
	e, err := kv.Get(ctx, subsKey(cl.ID))
	var rec sessionRecord
	if err == nil && json.Unmarshal(e.Value(), &rec) == nil && rec.Src != prev {
		err = errors.New("the record is another node's")
	}
	if err != nil {
		// Nothing to restore: the session had no subscription when
		// its node died, or the record did not reach the bucket.
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			h.warn.do(func() {
				h.log.Warn("mqtt cluster: cannot take over the session of a node that is down", "client", cl.ID, "node", node, "error", err)
			})
		}
		return nil
	}
	if len(rec.Subs) == 0 {
		return nil
	}
	// From the last message the dead node had taken: what it took since
	// may not have reached the client.
	start := e.Created()
	if c, err := js.Consumer(ctx, h.streamName(), h.nodeConsumer(node)); err == nil {
		if floor := c.CachedInfo().AckFloor.Stream; floor > 0 {
			if st, err := js.Stream(ctx, h.streamName()); err == nil {
				if m, err := st.GetMsg(ctx, floor); err == nil {
					start = m.Time
				}
			}
		}
	}
	if err := h.sessionConsumerFrom(js, cl.ID, rec.Subs, node, start.Add(-SessionOverlap), cl.Properties); err != nil {
		h.warn.do(func() {
			h.log.Warn("mqtt cluster: cannot take over the session of a node that is down", "client", cl.ID, "node", node, "error", err)
		})
		return nil
	}
	c, err := js.Consumer(ctx, h.streamName(), h.sessionConsumer(cl.ID))
	if err != nil {
		return nil
	}
	h.log.Info("mqtt cluster: session of a node that is down taken over", "client", cl.ID, "node", node)
	return c
}

// adopt takes over the session consumer of cl's client id, if another
// node left one; prev is the process that had claimed the client id
// before (owners.claim). The caller has marked the client id adopting.
func (h *Hook) adopt(cl *mqtt.Client, prev string) {
	ended := false
	end := func() {
		if !ended {
			ended = true
			h.ho.setAdopting(cl.ID, -1)
			h.recordSubs(cl) // the session's subscriptions are this node's now
		}
	}
	defer end()
	if d := time.Duration(h.ho.hold.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-h.done:
			return
		}
	}
	js := h.qs.ready()
	if js == nil || !persistent(cl) {
		return
	}
	name := h.sessionConsumer(cl.ID)
	if cl.Properties.Clean {
		// A clean start: whatever another node left is not wanted.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(ctx, h.streamName(), name)
		return
	}
	prevNode, _, _ := strings.Cut(prev, "/")
	elsewhere := prev != "" && prevNode != h.cfg.Node
	deadline := time.Now().Add(10 * time.Second) // the other node lets go
	asked := false
	var cons jetstream.Consumer
	for cons == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := js.Consumer(ctx, h.streamName(), name)
		cancel()
		switch {
		case err == nil:
			cons = c
			continue
		case !errors.Is(err, jetstream.ErrConsumerNotFound) || !elsewhere || time.Now().After(deadline):
			return
		case !asked:
			asked = true
			_, err := h.nc.Request(h.nodeSubject(prevNode), []byte(cl.ID), 5*time.Second)
			if errors.Is(err, nats.ErrNoResponders) {
				if cons = h.orphan(js, cl, prev); cons == nil {
					return
				}
				continue
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-h.done:
			return
		}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(ctx, h.streamName(), name)
	}()
	meta := cons.CachedInfo().Config.Metadata
	if meta[metaNode] == h.cfg.Node {
		return // back where it was: the local session has it all
	}
	var list []packets.Subscription
	_ = json.Unmarshal([]byte(meta[metaSubs]), &list)
	added := false
	for _, s := range list {
		if !mqtt.IsValidFilter(s.Filter, false) {
			continue
		}
		if _, ok := cl.State.Subscriptions.Get(s.Filter); !ok {
			cl.State.Subscriptions.Add(s.Filter, s)
			h.srv.Topics.Subscribe(cl.ID, s)
		}
		if h.want(s.Filter) {
			added = true
		}
	}
	if added {
		_ = h.qs.sync(h, false)
	}
	h.log.Info("mqtt cluster: persistent session moved here", "client", cl.ID, "from", meta[metaNode], "subscriptions", len(list))
	// The subscriptions are complete: record them (and let a SUBSCRIBE
	// waiting for them go on) before delivering what waited, which may
	// take long.
	end()
	// Deliver what waited, to this client only. mochi asks
	// OnSelectSubscribers, which picks the client, only for a topic with a
	// shared subscription (MOCHI.md row 21): the sessioner holds one of its
	// own on each of the session's filters meanwhile (never delivered to:
	// it is not a connected client, and OnSelectSubscribers drops it).
	sum := sha256.Sum256([]byte(cl.ID))
	group := "cluster-" + h.token[:8] + "-" + hex.EncodeToString(sum[:8])
	var held []string
	for _, s := range cl.State.Subscriptions.GetAll() {
		if _, _, shared := splitShared(s.Filter); shared {
			continue
		}
		f := mqtt.SharePrefix + "/" + group + "/" + s.Filter
		h.srv.Topics.Subscribe(h.sessioner.ID, packets.Subscription{Filter: f})
		held = append(held, f)
	}
	defer func() {
		for _, f := range held {
			h.srv.Topics.Unsubscribe(f, h.sessioner.ID)
		}
	}()
	for range 10000 { // bounded: at most 10000 batches
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return
		}
		n := 0
		for m := range batch.Messages() {
			n++
			select {
			case h.inbox <- inbound{jm: m, target: cl.ID}:
			case <-h.done:
				return
			}
		}
		if n == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			info, err := cons.Info(ctx)
			cancel()
			if err != nil || (info.NumPending == 0 && info.NumAckPending == 0) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
