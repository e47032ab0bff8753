package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// Storage kinds. Only bolt is built in: of mochi's file stores it is the one
// durable by default (every write committed with fsync), it started fastest
// and, with the fixes here, wrote fastest of the synced ones in our
// measurements, and it adds almost nothing to the binary because Caddy's own
// dependencies already link bbolt (see the README's Persistence section).
const (
	// StorageMemory keeps everything in memory: a restart loses sessions,
	// retained and queued messages. The default.
	StorageMemory = ""
	// StorageBolt keeps state in one bbolt file.
	StorageBolt = "bolt"
)

// StorageKinds are the storage kinds New accepts.
var StorageKinds = []string{StorageBolt}

// Storage says where the broker keeps the state that must survive a restart:
// persistent sessions, their subscriptions, retained messages and QoS 1/2
// messages in flight. The store is opened once, by New, and closed by
// Shutdown.
type Storage struct {
	// Kind is StorageMemory (the zero value) or StorageBolt.
	Kind string
	// Path is the database file. Required when Kind is not StorageMemory.
	Path string
	// LockTimeout is how long New waits for another process to release the
	// database file (bolt takes an exclusive lock). Default 5 s.
	LockTimeout time.Duration
}

// Enabled reports whether state is kept on disk.
func (s Storage) Enabled() bool { return s.Kind != StorageMemory }

// Validate checks the kind and path without touching the disk.
func (s Storage) Validate() error {
	switch s.Kind {
	case StorageMemory:
		return nil
	case StorageBolt:
		if s.Path == "" {
			return errors.New("storage bolt: no path")
		}
		return nil
	}
	return fmt.Errorf("unknown storage kind %q (supported: %v)", s.Kind, StorageKinds)
}

// open creates the storage hook and its config for mochi's AddHook.
func (s Storage) open() (*boltStore, any, error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("storage: %w", err)
	}
	timeout := s.LockTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	// NoSync false (bbolt's default): every write is its own transaction,
	// committed with fsync before mochi goes on.
	return &boltStore{Hook: new(bolt.Hook), known: make(map[string]bool), handover: make(map[*mqtt.Client]bool)}, &bolt.Options{
		Path:    s.Path,
		Options: &bbolt.Options{Timeout: timeout},
	}, nil
}

// boltStore is mochi's bolt hook with fixes:
//   - a clearer error when another process holds the file;
//   - packet identifiers restored on load (StoredInflightMessages);
//   - nothing written for sessions that end with their connection (MQTT 3
//     clean session, MQTT 5 session expiry 0), unless the store holds an
//     earlier persistent session of the same client id. mochi writes their
//     client record, subscriptions and every QoS 1/2 message in flight and
//     throws them away on the next start; with 10,000 clients that made
//     `caddy stop` wait for 10,000 synchronous deletes.
//   - no rewriting of a resumed session's queue: on takeover mochi deletes
//     every queued message of the old session and writes it again for the
//     new one, under the same key (2 synchronous writes per message, and a
//     crash in between loses them).
type boltStore struct {
	*bolt.Hook
	mu       sync.Mutex
	known    map[string]bool       // client ids with a record in the store
	handover map[*mqtt.Client]bool // old sessions whose queue a new connection inherits
	// caught reports old clients whose new messages go to their successor
	// (handover.go): written under the successor, never under them.
	caught func(*mqtt.Client) bool
}

// persistentSession reports whether cl's session outlives its connection
// (MQTT 5 session expiry, MQTT 3 clean session off).
func persistentSession(cl *mqtt.Client) bool {
	return (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval > 0) ||
		(cl.Properties.ProtocolVersion < 5 && !cl.Properties.Clean)
}

// keep reports whether cl's state belongs in the store.
func (h *boltStore) keep(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return false
	}
	persistent := persistentSession(cl)
	h.mu.Lock()
	defer h.mu.Unlock()
	if persistent {
		h.known[cl.ID] = true
	}
	return persistent || h.known[cl.ID]
}

func (h *boltStore) forget(id string) {
	h.mu.Lock()
	delete(h.known, id)
	h.mu.Unlock()
}

func (h *boltStore) StoredClients() ([]storage.Client, error) {
	v, err := h.Hook.StoredClients()
	h.mu.Lock()
	for _, c := range v {
		h.known[c.ID] = true
	}
	h.mu.Unlock()
	return v, err
}

func (h *boltStore) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if h.keep(cl) {
		h.Hook.OnSessionEstablished(cl, pk)
	}
}

func (h *boltStore) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if h.keep(cl) {
		h.Hook.OnWillSent(cl, pk)
	}
}

func (h *boltStore) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if !h.keep(cl) {
		return
	}
	h.Hook.OnDisconnect(cl, err, expire)
	if expire && cl.StopCause() != packets.ErrSessionTakenOver {
		h.forget(cl.ID)
	}
}

func (h *boltStore) OnClientExpired(cl *mqtt.Client) {
	h.Hook.OnClientExpired(cl)
	h.forget(cl.ID)
}

func (h *boltStore) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if h.keep(cl) {
		h.Hook.OnSubscribed(cl, pk, codes)
	}
}

func (h *boltStore) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if h.keep(cl) {
		h.Hook.OnUnsubscribed(cl, pk)
	}
}

func (h *boltStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Dup {
		// A resend: the record exists (written when the message was queued).
		return
	}
	if h.caught != nil && h.caught(cl) {
		return
	}
	if h.keep(cl) {
		h.Hook.OnQosPublish(cl, pk, sent, resends)
	}
}

// tracked writes a message the broker queued for cl itself (flow.go track).
// Unlike OnQosPublish it writes even when cl has been handed over since the
// message was queued: mochi then copied the message into the successor's
// session under the same client id and packet identifier, the same key.
func (h *boltStore) tracked(cl *mqtt.Client, pk packets.Packet) {
	if h.keep(cl) {
		h.Hook.OnQosPublish(cl, pk, pk.Created, 0)
	}
}

func (h *boltStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if h.keep(cl) {
		h.Hook.OnQosComplete(cl, pk)
	}
}

func (h *boltStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	inherited := h.handover[cl]
	h.mu.Unlock()
	if inherited {
		return // the new session has the same message under the same key
	}
	if h.keep(cl) {
		h.Hook.OnQosDropped(cl, pk)
	}
}

func (h *boltStore) Init(config any) error {
	err := h.Hook.Init(config)
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("storage file %s is locked by another process (another caddy running with the same data directory?): %w",
			config.(*bolt.Options).Path, err)
	}
	return err
}

// StoredInflightMessages restores the packet identifiers, which mochi's bolt
// hook (v2.7.9) does not write into the record, only into its key
// ("IFM_<client>:<packet id>"). Without them every message queued for a
// client is loaded under identifier 0 and all but one are lost.
func (h *boltStore) StoredInflightMessages() ([]storage.Message, error) {
	v, err := h.Hook.StoredInflightMessages()
	for i := range v {
		if v[i].PacketID != 0 {
			continue
		}
		if j := strings.LastIndexByte(v[i].ID, ':'); j >= 0 {
			if id, perr := strconv.ParseUint(v[i].ID[j+1:], 10, 16); perr == nil {
				v[i].PacketID = uint16(id)
			}
		}
	}
	return v, err
}

// orderHook fixes two things mochi does that lose or reorder QoS 1/2
// messages.
//
// Order on resume: mochi resends a resumed session's queued messages sorted
// by the low 16 bits of their creation time in seconds, with an unstable sort
// over a map, so messages queued within the same second come out in random
// order. While mochi resends, this hook substitutes each resent PUBLISH with
// the next one in queue order (creation second, then packet identifier in the
// order they were handed out).
//
// Acknowledge after storing (only with storage): mochi writes a publisher's
// PUBACK/PUBREC before it stores the message for the subscribers, so a crash
// in between loses a message the publisher was told was received. With
// storage, this hook holds back what the broker writes to the publisher from
// the start of a QoS 1/2 PUBLISH until mochi has finished processing it, so
// the acknowledgement leaves only once the message is on disk.
type orderHook struct {
	mqtt.HookBase
	b       *Broker
	holdAck bool
	store   *boltStore // nil without storage
}

func (h *orderHook) ID() string { return "caddy-mqtt-order" }

func (h *orderHook) Provides(b byte) bool {
	if h.holdAck && (b == mqtt.OnPublish || b == mqtt.OnPacketProcessed) {
		return true
	}
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnQosPublish, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnQosPublish notes a message published to the client while its queue is
// resent: written live, it is no part of the queue being resent. mochi
// numbers a resumed session's new messages from 1 again, so by identifier
// they sorted before the queue, took its places in the resend, and as many
// queued messages were never sent at all.
func (h *orderHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
		return
	}
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.resend.written(pk.PacketID)
	}
}

// OnPublish starts holding the publisher's outgoing bytes.
func (h *orderHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok && pk.FixedHeader.Qos > 0 {
		cc.hold()
	}
	return pk, nil
}

// OnPacketProcessed releases what was held once the publish is stored.
func (h *orderHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok && pk.FixedHeader.Type == packets.Publish {
		_ = cc.release()
	}
}

// OnSessionEstablish runs after authentication and before mochi hands the
// previous session's state to the new connection: if mochi is going to resend
// queued messages, arm the reordering.
func (h *orderHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok || pk.Connect.Clean {
		return
	}
	existing, ok := h.b.srv.Clients.Get(cl.ID)
	// The same condition as mochi's inheritClientSession.
	if !ok || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) ||
		existing.State.Inflight.Len() == 0 {
		return
	}
	if h.store != nil {
		h.store.mu.Lock()
		h.store.handover[existing] = true
		h.store.mu.Unlock()
	}
	cc.resend.Lock()
	cc.resend.existing = existing
	cc.resend.armed.Store(true)
	cc.resend.queue = nil
	cc.resend.started = false
	cc.resend.Unlock()
}

// OnSessionEstablished runs after mochi's resend: stop substituting.
func (h *orderHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.endResend(cl) }

// OnDisconnect ends the resend state of a connection that failed before it
// was established.
func (h *orderHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.endResend(cl) }

func (h *orderHook) endResend(cl *mqtt.Client) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		if !cc.resend.armed.Load() {
			return
		}
		cc.resend.Lock()
		existing := cc.resend.existing
		cc.resend.armed.Store(false)
		cc.resend.queue, cc.resend.existing, cc.resend.live = nil, nil, nil
		cc.resend.Unlock()
		if existing != nil && h.store != nil {
			h.store.mu.Lock()
			delete(h.store.handover, existing)
			h.store.mu.Unlock()
		}
	}
}

// encode substitutes resent PUBLISH packets (those mochi marks DUP
// while resuming a session) with the queue in order. Live messages carry no
// DUP flag and pass through, with no more than this small function on the
// stack of mochi's writer (see willPropsHook.encode).
func (h *orderHook) encode(cl *mqtt.Client, pk *packets.Packet) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok && pk.FixedHeader.Dup && cc.resend.armed.Load() {
		h.substitute(cl, cc, pk)
	}
}

func (h *orderHook) substitute(cl *mqtt.Client, cc *clientConn, pk *packets.Packet) {
	r := &cc.resend
	r.Lock()
	defer r.Unlock()
	if !r.armed.Load() {
		return
	}
	if !r.started {
		// The first resent packet: mochi has taken its resend list, and the
		// in-flight set holds that list plus what was published to the
		// client since (written live as it came: left out).
		r.queue = queuedPublishes(cl.State.Inflight.GetAll(false), r.live)
		r.started = true
	}
	if len(r.queue) == 0 {
		pk.FixedHeader.Dup = cc.sent.has(pk.PacketID)
		return
	}
	next := r.queue[0]
	r.queue = r.queue[1:]
	// DUP only for what the client may have seen [MQTT-3.3.1-1]: mochi
	// marks every queued message DUP, also those never sent.
	next.FixedHeader.Dup = cc.sent.has(next.PacketID)
	// Keep what WritePacket already set on the packet for this client.
	next.ProtocolVersion, next.Mods = pk.ProtocolVersion, pk.Mods
	if next.Expiry > 0 { // as WritePacket does for the packet it was given
		next.Properties.MessageExpiryInterval = uint32(max(next.Expiry-time.Now().Unix(), 1))
	}
	*pk = next
}

// resendOrder is a connection's state while its session is resumed.
// armed is read without the lock on every packet written to the connection,
// so that connections not resuming a session (nearly all, nearly always)
// never take it; it changes only under the lock.
type resendOrder struct {
	sync.Mutex
	armed    atomic.Bool
	started  bool
	queue    []packets.Packet
	existing *mqtt.Client
	live     map[uint16]bool // published since the session was resumed
}

// written notes a message written to the client as it is published, while
// the queue is resent.
func (r *resendOrder) written(id uint16) {
	if !r.armed.Load() {
		return
	}
	r.Lock()
	if r.armed.Load() {
		if r.live == nil {
			r.live = make(map[uint16]bool)
		}
		r.live[id] = true
	}
	r.Unlock()
}

// queuedPublishes returns the PUBLISH packets of an in-flight set in the
// order they were queued: by creation second, then by packet identifier in
// the order mochi hands them out (counting up, wrapping from 65535 to 1).
func queuedPublishes(all []packets.Packet, live map[uint16]bool) []packets.Packet {
	var q []packets.Packet
	for _, p := range all {
		if p.FixedHeader.Type == packets.Publish && !live[p.PacketID] {
			q = append(q, p)
		}
	}
	sort.Slice(q, func(i, j int) bool {
		if q[i].Created != q[j].Created {
			return q[i].Created < q[j].Created
		}
		return q[i].PacketID < q[j].PacketID
	})
	// Within one second the identifiers may have wrapped: start each group
	// after its largest gap.
	for start := 0; start < len(q); {
		end := start + 1
		for end < len(q) && q[end].Created == q[start].Created {
			end++
		}
		rotateAfterLargestGap(q[start:end])
		start = end
	}
	return q
}

func rotateAfterLargestGap(g []packets.Packet) {
	if len(g) < 2 {
		return
	}
	// Identifiers run from 1 to 65535: the gap from the last back to the
	// first wraps around.
	best, bestGap := 0, int(g[0].PacketID)+65535-int(g[len(g)-1].PacketID)
	for i := 1; i < len(g); i++ {
		if gap := int(g[i].PacketID) - int(g[i-1].PacketID); gap > bestGap {
			best, bestGap = i, gap
		}
	}
	if best == 0 {
		return
	}
	rot := append(append([]packets.Packet(nil), g[best:]...), g[:best]...)
	copy(g, rot)
}
