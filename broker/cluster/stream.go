package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// QoS 1/2 across nodes, at least once, through JetStream.
//
// A local QoS 1/2 publish goes to the subject <prefix>_q.<levels> (the same
// mapping as QoS 0 on <prefix>.<levels>, subject.go) with a JetStream
// publish: the stream <prefix>_msgs stores it (file storage) and answers
// with a PubAck, and only then does the publisher get its PUBACK/PUBREC.
// The header Nats-Msg-Id (<node>/<boot>/<seq>) lets JetStream drop a copy
// sent twice within StreamDuplicates.
//
// Each node reads the stream through one durable consumer of its own,
// <prefix>_node_<hash of node id>, filtered to the subjects of the plain
// (not shared) filters its sessions hold, connected or not. A message is
// acknowledged once it is handed to the local broker (queued for the
// node's persistent sessions), so a node killed and restarted resumes at
// the first message it had not acknowledged: what was published while it
// was down reaches its persistent sessions, restored from its storage.
// Shared subscriptions stay on core NATS queue groups (on both subject
// spaces): a QoS 1/2 message to a shared filter is stored, but delivered
// live only.
type qstream struct {
	mu       sync.Mutex
	js       jetstream.JetStream
	cons     jetstream.Consumer
	cc       jetstream.ConsumeContext
	filters  []string // the consumer's filter subjects
	consumed time.Time
	started  bool // the broker restored its sessions (OnStarted)
	opening  bool
}

// Stream limits. Old messages are discarded first: a node or session
// away longer than StreamMaxAge (or behind by more than StreamMaxBytes)
// loses what is older.
const (
	StreamMaxAge     = 24 * time.Hour
	StreamMaxBytes   = 1 << 30
	StreamDuplicates = 2 * time.Minute
	// ConsumerInactive removes the consumer of a node gone for good.
	ConsumerInactive = 7 * 24 * time.Hour
)

// qprefix is the first token of QoS 1/2 subjects.
func (h *Hook) qprefix() string { return h.prefix + "_q" }

func (h *Hook) streamName() string { return strings.ReplaceAll(h.prefix, ".", "_") + "_msgs" }

func (h *Hook) consumerName() string { return h.nodeConsumer(h.cfg.Node) }

// nodeConsumer names the durable consumer of node.
func (h *Hook) nodeConsumer(node string) string {
	sum := sha256.Sum256([]byte(node))
	return strings.ReplaceAll(h.prefix, ".", "_") + "_node_" + hex.EncodeToString(sum[:10])
}

// noFilter is a subject in the stream that no topic maps to (a level
// starting with % is always %XX with upper-case hex): a consumer without
// filters would get everything.
func (h *Hook) noFilter() string { return h.qprefix() + ".%-" }

// open creates the stream (once JetStream is there) and the node's
// consumer; it is retried by reconcile until it works.
func (q *qstream) open(h *Hook) {
	q.mu.Lock()
	if q.js != nil || q.opening || h.nc == nil || !h.Connected() {
		q.mu.Unlock()
		return
	}
	q.opening = true
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.opening = false
		q.mu.Unlock()
	}()
	js, err := jetstream.New(h.nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        h.streamName(),
		Description: "caddy-mqtt: QoS 1/2 messages between nodes",
		Subjects:    []string{h.qprefix() + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      StreamMaxAge,
		MaxBytes:    StreamMaxBytes,
		Duplicates:  StreamDuplicates,
	})
	if err != nil {
		h.warn.do(func() {
			h.log.Error("mqtt cluster: no JetStream stream for QoS 1/2; they go over core NATS (at most once across nodes)",
				"node", h.cfg.Node, "error", err)
		})
		return
	}
	// Filters the consumer had before this process (a restart): kept until
	// the restored sessions are known, so nothing they wait for is skipped.
	var old []string
	if c, err := js.Consumer(ctx, h.streamName(), h.consumerName()); err == nil {
		cfg := c.CachedInfo().Config
		old = cfg.FilterSubjects
		if cfg.FilterSubject != "" {
			old = append(old, cfg.FilterSubject)
		}
	}
	q.mu.Lock()
	q.js = js
	q.filters = old
	q.mu.Unlock()
	if err := q.sync(h, false); err != nil {
		h.log.Warn("mqtt cluster: cannot create the node's JetStream consumer", "node", h.cfg.Node, "error", err)
	}
	q.startConsuming(h)
}

// waitOpening waits, at most d, while open runs.
func (q *qstream) waitOpening(d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		q.mu.Lock()
		opening := q.opening
		q.mu.Unlock()
		if !opening {
			return
		}
	}
}

// ready reports whether QoS 1/2 go through the stream.
func (q *qstream) ready() jetstream.JetStream {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.js
}

// setStarted is called when the broker has restored its sessions.
func (q *qstream) setStarted(h *Hook) {
	q.mu.Lock()
	q.started = true
	q.mu.Unlock()
	q.startConsuming(h)
}

func (q *qstream) startConsuming(h *Hook) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cc != nil || q.cons == nil || !q.started {
		return
	}
	cc, err := q.cons.Consume(func(m jetstream.Msg) {
		select {
		case h.inbox <- inbound{jm: m}:
		case <-h.done:
		}
	}, jetstream.PullMaxMessages(1024), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			h.warn.do(func() { h.log.Warn("mqtt cluster: JetStream consumer", "node", h.cfg.Node, "error", err) })
		}
	}))
	if err != nil {
		h.log.Warn("mqtt cluster: cannot consume QoS 1/2 messages", "node", h.cfg.Node, "error", err)
		return
	}
	q.cc = cc
	q.consumed = time.Now()
}

// consumerShrinkAfter: filters are only removed from the consumer once it
// has been read for this long after a start (sessions restored, the
// backlog taken).
const consumerShrinkAfter = 10 * time.Second

// sync sets the consumer's filters to the node's plain filters; shrink
// allows removing some.
func (q *qstream) sync(h *Hook, shrink bool) error {
	want := reduceSubjects(h.jsSubjects())
	q.mu.Lock()
	js := q.js
	if js == nil {
		q.mu.Unlock()
		return nil
	}
	if !shrink || !q.started || q.cc == nil || time.Since(q.consumed) < consumerShrinkAfter {
		want = reduceSubjects(append(want, q.filters...))
	}
	if len(want) == 0 {
		want = []string{h.noFilter()}
	} else if len(want) > 1 {
		want = slices.DeleteFunc(want, func(s string) bool { return s == h.noFilter() })
	}
	same := q.cons != nil && slices.Equal(want, q.filters)
	q.mu.Unlock()
	if same {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.CreateOrUpdateConsumer(ctx, h.streamName(), jetstream.ConsumerConfig{
		Durable:           h.consumerName(),
		Description:       "caddy-mqtt node " + h.cfg.Node,
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           30 * time.Second,
		MaxAckPending:     20000,
		FilterSubjects:    want,
		InactiveThreshold: ConsumerInactive,
	})
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.cons = c
	q.filters = want
	q.mu.Unlock()
	return nil
}

func (q *qstream) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cc != nil {
		q.cc.Stop()
	}
}

// jsSubjects are the stream subjects of the plain filters held here.
func (h *Hook) jsSubjects() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for f := range h.subs {
		if _, _, shared := splitShared(f); shared {
			continue
		}
		out = append(out, FilterSubjects(h.qprefix(), f)...)
	}
	return out
}

// reduceSubjects returns sorted subjects none of which overlaps another
// (JetStream refuses overlapping consumer filters): a subject covered by
// another is dropped, and two that overlap otherwise are replaced by what
// covers both (at worst everything in the stream: the broker only
// delivers to matching subscriptions anyway).
func reduceSubjects(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	out = slices.Compact(out)
	for changed := true; changed; {
		changed = false
	outer:
		for i := range out {
			for j := range out {
				if i == j || !overlaps(out[i], out[j]) {
					continue
				}
				switch {
				case covers(out[i], out[j]):
					out = slices.Delete(out, j, j+1)
				case covers(out[j], out[i]):
					out = slices.Delete(out, i, i+1)
				default:
					a, b := out[i], out[j]
					out = slices.DeleteFunc(out, func(s string) bool { return s == a || s == b })
					w := widen(a, b)
					out = append(out, w)
					slices.Sort(out)
					out = slices.Compact(out)
				}
				changed = true
				break outer
			}
		}
	}
	return out
}

// covers: every subject matching b matches a.
func covers(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, t := range at {
		if t == ">" {
			return len(bt) > i
		}
		if i >= len(bt) || bt[i] == ">" {
			return false
		}
		if t != "*" && (bt[i] == "*" || bt[i] != t) {
			return false
		}
	}
	return len(at) == len(bt)
}

// overlaps: some subject matches both.
func overlaps(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		if i == len(at) || i == len(bt) {
			return len(at) == len(bt)
		}
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != "*" && bt[i] != "*" && at[i] != bt[i] {
			return false
		}
	}
}

// widen is a subject covering both a and b: their common literal tokens
// followed by >.
func widen(a, b string) string {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	var common []string
	for i := 0; i < len(at) && i < len(bt) && at[i] == bt[i] && at[i] != "*" && at[i] != ">"; i++ {
		common = append(common, at[i])
	}
	if len(common) == 0 {
		return ">"
	}
	if len(common) == len(at) || len(common) == len(bt) {
		common = common[:len(common)-1]
		if len(common) == 0 {
			return ">"
		}
	}
	return strings.Join(common, ".") + ".>"
}

// publishStored sends a QoS 1/2 message to the stream and waits for its
// PubAck.
func (h *Hook) publishStored(js jetstream.JetStream, m *nats.Msg, topic string, seq string) error {
	m.Subject = TopicSubject(h.qprefix(), topic)
	if len(m.Subject) > MaxSubjectLength {
		return errTooLong
	}
	m.Header.Set(jetstream.MsgIDHeader, h.src+"/"+seq)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := js.PublishMsg(ctx, m)
	return err
}
