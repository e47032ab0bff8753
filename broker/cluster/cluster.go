// Package cluster joins brokers on several nodes through NATS, so that a
// client on one node receives what a client on another publishes. Each
// node publishes its clients' messages on NATS subjects mapped from their
// topics (subject.go), subscribes on NATS to the distinct filters its
// clients hold, and injects what arrives into its own broker. Retained
// messages live in a JetStream key-value bucket (retained.go). It knows
// nothing about Caddy.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is one node's view of the cluster.
type Config struct {
	// URLs of NATS servers (nats://host:4222, tls://...). Required.
	URLs []string
	// Credentials is a NATS .creds file (JWT + nkey seed); empty for none.
	Credentials string
	// TLS for the NATS connection; nil for the URLs' defaults.
	TLS *tls.Config
	// Node names this node; it must differ between nodes. Required.
	Node string
	// SubjectPrefix is the first token of every subject. Default "mqtt".
	SubjectPrefix string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// DefaultSubjectPrefix is used when Config.SubjectPrefix is empty.
const DefaultSubjectPrefix = "mqtt"

// Validate checks the config.
func (c Config) Validate() error {
	if len(c.URLs) == 0 {
		return errors.New("cluster: no NATS url")
	}
	if c.Node == "" {
		return errors.New("cluster: no node id")
	}
	if c.SubjectPrefix != "" {
		for tok := range strings.SplitSeq(c.SubjectPrefix, ".") {
			if tok == "" || strings.ContainsAny(tok, "*> \t\r\n%") {
				return fmt.Errorf("cluster: subject_prefix %q is not a literal NATS subject", c.SubjectPrefix)
			}
		}
	}
	return nil
}

// Stats are a node's cluster counters.
type Stats struct {
	Published     uint64 // messages sent to NATS
	PublishFailed uint64 // local publishes that could not reach NATS
	Received      uint64 // messages from other nodes injected here
	Duplicates    uint64 // copies dropped (overlapping filters)
	Dropped       uint64 // arrived but no local receiver (shared member gone)
}

// Hook is the broker hook that forwards local publishes to NATS and
// injects the other nodes' messages. Add it with Options.Hooks; its Init
// receives the *mqtt.Server.
type Hook struct {
	mqtt.HookBase
	cfg    Config
	prefix string
	log    *slog.Logger
	src    string // node id and boot nonce: unique per process
	token  string // random, in the injectors' client ids

	srv       *mqtt.Server
	nc        *nats.Conn
	injector  *mqtt.Client           // injects plain deliveries
	sharer    *mqtt.Client           // injects deliveries to one shared subscription
	sharing   atomic.Pointer[string] // the shared filter sharer is injecting for
	sessioner *mqtt.Client           // injects deliveries to one client (sessions.go)
	target    atomic.Pointer[string] // the client id sessioner is injecting for
	inbox     chan inbound
	kick      chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup

	seq   atomic.Uint64
	stats struct{ published, failed, received, dups, dropped atomic.Uint64 }

	mu   sync.Mutex
	subs map[string]*filterSub // by MQTT filter (shared ones with their $share/<group>/)

	reclaiming sync.Mutex // one reclaim at a time: each claims a session once

	dedup dedup // inject loop only
	ret   retained
	own   owners
	qs    qstream
	ho    handoff
	warn  logEvery
}

// inbound is a NATS message and the shared filter of the queue
// subscription it came through ("" for a plain one).
type inbound struct {
	m      *nats.Msg
	shared string
	jm     jetstream.Msg // from the node's JetStream consumer (m is nil)
	target string        // deliver to this client only (a session's consumer)
}

// filterSub is the NATS interest of one MQTT filter.
type filterSub struct {
	subs  []*nats.Subscription
	since time.Time // when last asked for: kept at least reconcileGrace
}

// New checks cfg and returns a hook that connects when the broker starts.
func New(cfg Config) (*Hook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hook{
		cfg:    cfg,
		prefix: cfg.SubjectPrefix,
		log:    cfg.Logger,
		src:    cfg.Node + "/" + randomHex(6),
		token:  randomHex(16),
		inbox:  make(chan inbound, 4096),
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		subs:   make(map[string]*filterSub),
		dedup:  dedup{bySource: make(map[string]*window)},
		warn:   logEvery{every: 10 * time.Second},
	}
	return h, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *Hook) ID() string { return "caddy-mqtt-cluster" }

func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnWillSent, mqtt.OnSelectSubscribers,
		mqtt.OnSubscribe, mqtt.OnUnsubscribed, mqtt.OnDisconnect, mqtt.OnClientExpired,
		mqtt.OnSessionEstablished, mqtt.OnStarted, mqtt.OnSubscribed:
		return true
	}
	return false
}

// Node returns the node id.
func (h *Hook) Node() string { return h.cfg.Node }

// Stats returns the counters.
func (h *Hook) Stats() Stats {
	return Stats{
		Published: h.stats.published.Load(), PublishFailed: h.stats.failed.Load(),
		Received: h.stats.received.Load(), Duplicates: h.stats.dups.Load(), Dropped: h.stats.dropped.Load(),
	}
}

// NATSURL is the URL of the NATS server the node is connected to.
func (h *Hook) NATSURL() string { return h.nc.ConnectedUrl() }

// Connected reports whether the NATS connection is up.
func (h *Hook) Connected() bool { return h.nc != nil && h.nc.IsConnected() }

// Init connects to NATS. A NATS server that is down is retried in the
// background: the broker starts anyway and serves its local clients.
func (h *Hook) Init(config any) error {
	srv, ok := config.(*mqtt.Server)
	if !ok || srv == nil {
		return errors.New("cluster hook: Init needs the *mqtt.Server")
	}
	h.srv = srv
	// Created here, before any connection: NewClient reads a capability
	// the broker changes per connection (broker/writer.go).
	h.injector = srv.NewClient(nil, mqtt.LocalListener, "\x00cluster/"+h.token, true)
	h.sharer = srv.NewClient(nil, mqtt.LocalListener, "\x00cluster/"+h.token+"/share", true)
	h.sessioner = srv.NewClient(nil, mqtt.LocalListener, "\x00cluster/"+h.token+"/session", true)

	opts := []nats.Option{
		nats.Name("caddy-mqtt " + h.cfg.Node),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(200*time.Millisecond, time.Second),
		// Publishes while disconnected fail instead of piling up: the
		// publisher is told (0x89) rather than delivered to late.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			h.log.Warn("mqtt cluster: NATS connection lost; cross-node delivery stops until it is back", "node", h.cfg.Node, "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			h.log.Info("mqtt cluster: NATS connection back", "node", h.cfg.Node, "server", nc.ConnectedUrlRedacted())
			h.ret.reconnected(h, nc)
			go h.ret.watch.resume(h)
			go func() {
				h.own.watch.resume(h) // first: it waits for JetStream, which the claims need
				h.reclaim()
			}()
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			h.log.Info("mqtt cluster: connected to NATS", "node", h.cfg.Node, "server", nc.ConnectedUrlRedacted())
			h.ret.reconnected(h, nc)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			h.warn.do(func() { h.log.Warn("mqtt cluster: NATS error", "node", h.cfg.Node, "error", err) })
		}),
	}
	if h.cfg.Credentials != "" {
		opts = append(opts, nats.UserCredentials(h.cfg.Credentials))
	}
	if h.cfg.TLS != nil {
		opts = append(opts, nats.Secure(h.cfg.TLS))
	}
	nc, err := nats.Connect(strings.Join(h.cfg.URLs, ","), opts...)
	if err != nil {
		return fmt.Errorf("mqtt cluster: connecting to NATS: %w", err)
	}
	h.nc = nc
	// Other nodes ask for the sessions held here (sessions.go).
	if _, err := nc.Subscribe(h.nodeSubject(h.cfg.Node), h.serveHandoff); err != nil {
		return fmt.Errorf("mqtt cluster: subscribing on NATS: %w", err)
	}
	if nc.IsConnected() {
		h.ret.reconnected(h, nc) // the handler may have run before h.nc was set
	}
	h.wg.Add(2)
	go h.injectLoop()
	go h.reconcileLoop()
	h.ret.waitLoaded(5 * time.Second)
	// The stream and the node's consumer before any client: a consumer
	// made later starts at new messages, and would miss what was stored
	// for a subscription made before it.
	h.qs.open(h)
	h.qs.waitOpening(10 * time.Second) // if another goroutine was opening it
	return nil
}

// Stop closes the NATS connection.
func (h *Hook) Stop() error {
	select {
	case <-h.done:
		return nil
	default:
	}
	close(h.done)
	if h.nc != nil {
		h.nc.Close()
	}
	h.ret.stop()
	h.qs.stop()
	h.wg.Wait()
	return nil
}

// ours tells whether cl is one of this hook's injectors.
func (h *Hook) ours(cl *mqtt.Client) bool {
	return cl.Net.Inline && strings.HasPrefix(cl.ID, "\x00cluster/"+h.token)
}

// MaxSubjectLength bounds the subjects the cluster uses. A NATS server
// closes a connection whose protocol line exceeds its max_control_line
// (4 KiB by default), so one client publishing or subscribing to a very
// long topic (MQTT allows 64 KiB) would cut the whole node off: such
// topics stay on their node (a QoS 1/2 publish is refused with 0x89).
const MaxSubjectLength = 2048

var errTooLong = errors.New("topic too long for a NATS subject")

// forwarded says whether a topic goes to the other nodes: $SYS is each
// node's own.
func forwarded(topic string) bool {
	return !strings.HasPrefix(topic, "$SYS/") && topic != "$SYS"
}

// OnPublish sends a local client's publish to NATS before mochi delivers it
// locally and acknowledges it.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.ours(cl) {
		// The retained copy of a message from another node comes from
		// the bucket (retained.go), which orders all nodes' writes.
		pk.FixedHeader.Retain = false
		return pk, nil
	}
	if !forwarded(pk.TopicName) || pk.Ignore {
		return pk, nil
	}
	if err := h.forward(&pk); err != nil {
		if pk.FixedHeader.Qos > 0 {
			return pk, packets.ErrServerBusy // 0x89 in the v5 PUBACK; MQTT 3 cannot be told
		}
	}
	return pk, nil
}

// OnWillSent forwards a will once mochi has delivered it locally.
func (h *Hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if forwarded(pk.TopicName) {
		_ = h.forward(&pk)
	}
}

func (h *Hook) forward(pk *packets.Packet) error {
	now := time.Now()
	if !h.Connected() {
		return h.failed(pk, errors.New("not connected to NATS"))
	}
	subject := TopicSubject(h.prefix, pk.TopicName)
	if len(subject) > MaxSubjectLength {
		return h.failed(pk, errTooLong)
	}
	m := nats.NewMsg(subject)
	m.Data = pk.Payload
	m.Header.Set(hdrSource, h.src)
	m.Header.Set(hdrSeq, strconv.FormatUint(h.seq.Add(1), 10))
	encodeHeader(m.Header, pk, now)
	if js := h.qs.ready(); js != nil && pk.FixedHeader.Qos > 0 {
		// Stored in the stream before the PUBACK (stream.go).
		if err := h.publishStored(js, m, pk.TopicName, m.Header.Get(hdrSeq)); err != nil {
			return h.failed(pk, err)
		}
	} else if err := h.nc.PublishMsg(m); err != nil {
		return h.failed(pk, err)
	} else if pk.FixedHeader.Qos > 0 {
		// The PUBACK leaves once the NATS server has the message (and has
		// passed it to the connections of the nodes subscribed to it):
		// nats.go's Publish only buffers, and a node killed after
		// acknowledging would lose what it had buffered.
		if err := h.nc.FlushTimeout(5 * time.Second); err != nil {
			return h.failed(pk, err)
		}
	}
	h.stats.published.Add(1)
	if pk.FixedHeader.Retain {
		if err := h.ret.put(h, pk, now); err != nil {
			return h.failed(pk, err)
		}
	}
	return nil
}

func (h *Hook) failed(pk *packets.Packet, err error) error {
	h.stats.failed.Add(1)
	h.warn.do(func() {
		h.log.Warn("mqtt cluster: message not sent to the other nodes", "node", h.cfg.Node,
			"topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "error", err, "failed_total", h.stats.failed.Load())
	})
	return err
}

// OnSelectSubscribers leaves shared subscriptions to NATS queue groups,
// which pick one member in the whole cluster: a local publish reaches the
// local members only through NATS, and a message from a queue subscription
// goes to that shared subscription's local members only.
func (h *Hook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if !forwarded(pk.TopicName) {
		return subs
	}
	if pk.Origin == h.sessioner.ID {
		target := *h.target.Load() // set by inject, as sharing
		one := map[string]packets.Subscription{}
		if s, ok := subs.Subscriptions[target]; ok {
			one[target] = s
		}
		return &mqtt.Subscribers{
			Shared:              map[string]map[string]packets.Subscription{},
			Subscriptions:       one,
			InlineSubscriptions: map[int]mqtt.InlineSubscription{},
		}
	}
	if pk.Origin == h.sharer.ID {
		// Set by inject, on this goroutine: mochi selects subscribers
		// synchronously inside InjectPacket.
		shared := *h.sharing.Load()
		return &mqtt.Subscribers{
			Shared:              map[string]map[string]packets.Subscription{shared: subs.Shared[shared]},
			Subscriptions:       map[string]packets.Subscription{},
			InlineSubscriptions: map[int]mqtt.InlineSubscription{},
		}
	}
	if !h.Connected() {
		return subs // NATS down: local members still get local messages
	}
	subs.Shared = map[string]map[string]packets.Subscription{}
	subs.SharedSelected = map[string]packets.Subscription{}
	return subs
}

// OnSubscribe makes sure NATS sends this node the filters' messages before
// the SUBACK leaves, so a message published anywhere after the SUBACK is
// received. Filters refused later (ACL, limits) are dropped by reconcile.
func (h *Hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline || h.nc == nil {
		return pk
	}
	added := false
	for _, f := range pk.Filters {
		if h.want(f.Filter) {
			added = true
		}
	}
	if added && h.Connected() {
		_ = h.nc.FlushTimeout(2 * time.Second)
		if err := h.qs.sync(h, false); err != nil {
			h.warn.do(func() {
				h.log.Warn("mqtt cluster: cannot update the node's JetStream consumer", "node", h.cfg.Node, "error", err)
			})
		}
	}
	return pk
}

// OnStarted: the broker has restored its stored sessions, so the node's
// consumer may deliver what was published while the node was down.
func (h *Hook) OnStarted() { h.qs.setStarted(h) }

// OnSubscribed records a persistent session's subscriptions for the
// other nodes (sessions.go).
func (h *Hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) { h.recordSubsNow(cl) }

func (h *Hook) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) {
	h.recordSubsNow(cl)
	h.reconcileSoon()
}

func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !cl.Net.Inline {
		if expire && !cl.IsTakenOver() {
			h.forgetSubs(cl) // the session ends with its connection
		}
		h.own.release(h, cl)
		switch {
		case h.ho.takeMoved(cl.ID):
			h.discard(cl) // the session went with its client to another node
		case !expire && !cl.IsTakenOver():
			go h.leave(cl)
		}
	}
	h.reconcileSoon()
}
func (h *Hook) OnClientExpired(cl *mqtt.Client) {
	h.forgetSubs(cl)
	h.reconcileSoon()
}
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if !cl.Net.Inline {
		h.claimSession(cl)
	}
	h.reconcileSoon()
}

// claimSession claims cl's client id for this node and takes over what
// another node left of its session (sessions.go).
func (h *Hook) claimSession(cl *mqtt.Client) {
	h.ho.setAdopting(cl.ID, 1)
	prev := h.own.claim(h, cl)
	go h.adopt(cl, prev)
}

// reclaim claims, once NATS is back, the client ids of the sessions that
// connected here while it was away. Their claims could not be written, so
// another node could neither close them when the client moved there, nor
// hand them what the client's session had there, nor take them over if this
// node died. The bucket orders them after every claim made before: the
// last one stays connected, as with two connects at the same time.
func (h *Hook) reclaim() {
	h.reclaiming.Lock()
	defer h.reclaiming.Unlock()
	if h.own.bucket() == nil || !h.Connected() {
		return
	}
	n := 0
	for _, cl := range h.srv.Clients.GetAll() {
		if !cl.Net.Inline && !cl.Closed() && !h.own.known(cl.ID) {
			h.claimSession(cl)
			n++
		}
	}
	if n > 0 {
		h.log.Info("mqtt cluster: sessions that connected while NATS was away claimed", "node", h.cfg.Node, "sessions", n)
	}
}

// want subscribes on NATS for filter if not yet; it reports whether it did.
func (h *Hook) want(filter string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if fs, ok := h.subs[filter]; ok {
		fs.since = time.Now()
		return false
	}
	group, plain, isShared := splitShared(filter)
	if strings.HasPrefix(plain, "$SYS") || !mqtt.IsValidFilter(filter, false) {
		return false
	}
	fs := &filterSub{since: time.Now()}
	var err error
	subjects := FilterSubjects(h.prefix, plain)
	if isShared {
		// Shared subscriptions get QoS 1/2 messages live from the stream's
		// subjects too, through the same queue group.
		subjects = append(subjects, FilterSubjects(h.qprefix(), plain)...)
	}
	for _, subj := range subjects {
		if len(subj) > MaxSubjectLength {
			h.warn.do(func() {
				h.log.Warn("mqtt cluster: filter too long for NATS; it only gets this node's messages", "filter", filter)
			})
			return false
		}
	}
	for _, subj := range subjects {
		var s *nats.Subscription
		if isShared {
			s, err = h.nc.QueueSubscribe(subj, queueName(group, plain), h.deliverShared(filter))
		} else {
			s, err = h.nc.Subscribe(subj, h.deliverPlain)
		}
		if err != nil {
			break
		}
		// NATS drops (and reports) what the inject loop cannot take
		// rather than buffering without end.
		_ = s.SetPendingLimits(65536, 64<<20)
		fs.subs = append(fs.subs, s)
	}
	if err != nil {
		for _, s := range fs.subs {
			_ = s.Unsubscribe()
		}
		h.log.Warn("mqtt cluster: cannot subscribe on NATS", "filter", filter, "error", err)
		return false
	}
	h.subs[filter] = fs
	return true
}

// splitShared splits $share/<group>/<filter>.
func splitShared(filter string) (group, plain string, shared bool) {
	// mochi compares the prefix without regard to case.
	if len(filter) <= len(mqtt.SharePrefix) || !strings.EqualFold(filter[:len(mqtt.SharePrefix)], mqtt.SharePrefix) ||
		filter[len(mqtt.SharePrefix)] != '/' {
		return "", filter, false
	}
	rest := filter[len(mqtt.SharePrefix)+1:]
	var ok bool
	group, plain, ok = strings.Cut(rest, "/")
	if !ok {
		return "", filter, false
	}
	return group, plain, true
}

// queueName names the NATS queue group of one shared subscription. NATS
// forms groups by name across all matching subjects, while MQTT's are per
// share name and filter, so the name includes both (hashed: queue names
// cannot hold every character a share name can).
func queueName(group, filter string) string {
	sum := sha256.Sum256([]byte(group + "\x00" + filter))
	return "mqtt-share-" + hex.EncodeToString(sum[:12])
}

func (h *Hook) deliverPlain(m *nats.Msg) {
	select {
	case h.inbox <- inbound{m: m}:
	case <-h.done:
	}
}

func (h *Hook) deliverShared(filter string) nats.MsgHandler {
	return func(m *nats.Msg) {
		select {
		case h.inbox <- inbound{m: m, shared: filter}:
		case <-h.done:
		}
	}
}

// injectLoop delivers what NATS sends, in arrival order, from one
// goroutine: one publisher's messages keep their order [MQTT-4.6.0-6].
func (h *Hook) injectLoop() {
	defer h.wg.Done()
	for {
		select {
		case <-h.done:
			return
		case in := <-h.inbox:
			h.inject(in)
		}
	}
}

func (h *Hook) inject(in inbound) {
	m, prefix := in.m, h.prefix
	if in.jm != nil {
		// Acknowledged once handed to the broker (queued for offline
		// persistent sessions), also when it is our own or unwanted.
		defer func() { _ = in.jm.Ack() }()
		m = &nats.Msg{Subject: in.jm.Subject(), Header: in.jm.Headers(), Data: in.jm.Data()}
		prefix = h.qprefix()
		if m.Header.Get(hdrSource) == h.src && in.target == "" {
			return
		}
	} else if strings.HasPrefix(m.Subject, h.qprefix()+".") {
		prefix = h.qprefix() // a stored QoS 1/2 message to a shared subscription
	}
	src := m.Header.Get(hdrSource)
	if in.shared == "" && in.jm == nil {
		if src == h.src {
			return // our own publish: delivered locally already
		}
		seq, _ := strconv.ParseUint(m.Header.Get(hdrSeq), 10, 64)
		if src != "" && seq > 0 && h.dedup.seen(src, seq) {
			h.stats.dups.Add(1)
			return
		}
	}
	topic, err := SubjectTopic(prefix, m.Subject)
	if err != nil || !forwarded(topic) || !mqtt.IsValidFilter(topic, true) {
		h.stats.dropped.Add(1)
		return
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     m.Data,
	}
	decodeHeader(m.Header, &pk)
	pk.PacketID = uint16(pk.FixedHeader.Qos) // as mochi's Publish: checked for validity only
	cl := h.injector
	if in.target != "" {
		if _, ok := h.srv.Clients.Get(in.target); !ok { // offline: queued
			h.stats.dropped.Add(1)
			return
		}
		if len(h.srv.Topics.Subscribers(topic).Shared) == 0 {
			// Without a shared subscription mochi would not let
			// OnSelectSubscribers pick the target: everyone would get it.
			h.stats.dropped.Add(1)
			return
		}
		cl = h.sessioner
		h.target.Store(&in.target)
	} else if in.shared != "" {
		if len(h.srv.Topics.Subscribers(topic).Shared[in.shared]) == 0 {
			h.stats.dropped.Add(1) // the member left since NATS chose us
			return
		}
		cl = h.sharer
		h.sharing.Store(&in.shared)
	}
	if err := h.srv.InjectPacket(cl, pk); err != nil {
		h.warn.do(func() { h.log.Warn("mqtt cluster: cannot deliver", "topic", topic, "error", err) })
		return
	}
	h.stats.received.Add(1)
}

// reconcileGrace keeps a filter's NATS interest for a while after a
// SUBSCRIBE asked for it, before mochi has recorded the subscription.
const reconcileGrace = 5 * time.Second

func (h *Hook) reconcileSoon() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// reconcileLoop keeps the NATS subscriptions equal to the distinct filters
// the node's sessions hold (connected or not), counting holders per filter:
// soon after a change, and every 30 s in case an event was missed.
func (h *Hook) reconcileLoop() {
	defer h.wg.Done()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	again := h.reconcile() // sessions restored from storage
	for {
		var graceOver <-chan time.Time
		if again > 0 {
			graceOver = time.After(again)
		}
		select {
		case <-h.done:
			return
		case <-graceOver:
		case <-h.kick:
			// Gather a burst of disconnects into one pass.
			select {
			case <-time.After(200 * time.Millisecond):
			case <-h.done:
				return
			}
		case <-tick.C:
		}
		again = h.reconcile()
	}
}

// reconcile returns when to run again for filters kept only by their grace
// period (0: no need).
func (h *Hook) reconcile() (again time.Duration) {
	holders := make(map[string]int)
	for _, cl := range h.srv.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		for f := range cl.State.Subscriptions.GetAll() {
			holders[f]++
		}
	}
	for f := range holders {
		h.want(f)
	}
	defer func() {
		h.qs.open(h)
		if err := h.qs.sync(h, true); err != nil {
			h.warn.do(func() {
				h.log.Warn("mqtt cluster: cannot update the node's JetStream consumer", "node", h.cfg.Node, "error", err)
			})
		}
	}()
	h.mu.Lock()
	defer h.mu.Unlock()
	for f, fs := range h.subs {
		if holders[f] > 0 {
			continue
		}
		if left := reconcileGrace - time.Since(fs.since); left > 0 {
			if again == 0 || left < again {
				again = left + 10*time.Millisecond
			}
			continue
		}
		for _, s := range fs.subs {
			_ = s.Unsubscribe()
		}
		delete(h.subs, f)
	}
	return again
}

// Filters returns the filters the node holds NATS interest for.
func (h *Hook) Filters() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.subs))
	for f := range h.subs {
		out = append(out, f)
	}
	return out
}

// Drain waits until the node has flushed its publishes to NATS.
func (h *Hook) Flush(ctx context.Context) error {
	if h.nc == nil {
		return nil
	}
	return h.nc.FlushWithContext(ctx)
}

// dedup drops the second copy of a message that arrives through two
// overlapping subscriptions (a/+ and a/#), by source and sequence.
type dedup struct{ bySource map[string]*window }

const windowSize = 4096

type window struct {
	high uint64
	seen map[uint64]struct{}
}

func (d *dedup) seen(src string, seq uint64) bool {
	w := d.bySource[src]
	if w == nil {
		if len(d.bySource) > 10000 {
			clear(d.bySource) // many restarted nodes: forget, at worst one duplicate each
		}
		w = &window{seen: make(map[uint64]struct{})}
		d.bySource[src] = w
	}
	if _, ok := w.seen[seq]; ok {
		return true
	}
	if seq+windowSize < w.high {
		return false // too old to tell: deliver (at least once)
	}
	w.seen[seq] = struct{}{}
	if seq > w.high {
		w.high = seq
		if len(w.seen) > 2*windowSize {
			for s := range w.seen {
				if s+windowSize < w.high {
					delete(w.seen, s)
				}
			}
		}
	}
	return false
}

// logEvery limits a repeated warning to one per interval.
type logEvery struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

func (l *logEvery) do(f func()) {
	l.mu.Lock()
	now := time.Now()
	ok := now.Sub(l.last) >= l.every
	if ok {
		l.last = now
	}
	l.mu.Unlock()
	if ok {
		f()
	}
}
