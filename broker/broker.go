// Package broker runs one mochi-mqtt server without network listeners of its
// own: the doors (Caddy's HTTP handler, the layer4 handler) accept
// connections and hand them over with Serve. It knows nothing about Caddy.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ErrClosed is returned by Serve once the broker is shutting down.
var ErrClosed = errors.New("mqtt broker is shut down")

// ConnInfo describes a connection a door hands to the broker.
type ConnInfo struct {
	// Door is the way the client came in.
	Door Door
	// RemoteAddr is the client's real address when it differs from the
	// socket's (trusted proxies, PROXY protocol). Nil means conn.RemoteAddr().
	RemoteAddr net.Addr
	// TLS is the state of the TLS connection the client came through.
	TLS *tls.ConnectionState
	// AllowAnonymous overrides the policy's allow_anonymous for this door.
	AllowAnonymous *bool
	// Limits are the door's own connection and packet limits.
	Limits DoorLimits
	// Identity overrides the policy's use_identity_as_username /
	// use_subject_as_username for this door (IdentityDefault: the policy's).
	Identity IdentitySource
	// AuthKey names the door's own password file and ACL in the policy
	// (AuthPolicy.Doors); empty for the broker-wide ones.
	AuthKey string
	// Name labels the door in metrics, logs and the admin API when a
	// config has several doors of one kind; empty: the kind (Door).
	Name string
	// Socket is the TCP connection under conn when the door adds nothing
	// to what is written to it (raw MQTT: no TLS, no WebSocket); the
	// broker then writes to it directly (writer.go). Nil otherwise.
	Socket net.Conn
	// Handler identifies the door instance (one handler in the config),
	// whose connections Limits.MaxConnections counts; it must be
	// comparable. Nil counts the connection under its Door.
	Handler any
}

// limitKey is what the door's max_connections counts the connection under.
func (i ConnInfo) limitKey() any {
	if i.Handler != nil {
		return i.Handler
	}
	return i.Door
}

// Broker is one MQTT broker shared by all doors.
type Broker struct {
	srv  *mqtt.Server
	opts Options
	log  *slog.Logger

	policy atomic.Pointer[policyBox]
	ids    idLocks // see takeover.go

	store    *boltStore   // nil without storage
	doorKeys *doorKeys    // nil without storage
	rate     *rateLimiter // per client IP; nil when unlimited
	auth     *authGate    // see authslots.go
	refusals logLimiter   // see logRefusal
	drops    logLimiter   // see logDrop

	metrics     metrics  // metrics.go
	warnSampler *sampler // connlog.go

	mu        sync.Mutex
	closing   bool
	conns     map[*clientConn]struct{}
	doorConns map[any]int
	serving   sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// policyBox lets an interface value live behind an atomic.Pointer.
type policyBox struct{ Policy }

// New creates a broker and starts its housekeeping (expiry, $SYS, delayed
// wills). It opens no sockets.
func New(opts Options, policy Policy) (*Broker, error) {
	opts = opts.WithDefaults()
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = opts.MaxPacketSize
	// The channel mochi's writer goroutine takes a client's packets from
	// (allocated in full for every connection): the write path queues
	// behind it (writer.go, flow.go), and deliveries wait for room in it
	// (backpressure.go, awaitWriteSlot), so it only evens out scheduling.
	caps.MaximumClientWritesPending = mochiWriteSlots
	// mochi's per-client store of QoS 1/2 messages holds those in flight
	// and those queued; flow.go and the ACL hook keep it within
	// max_inflight_messages + max_queued_messages, and MQTT packet
	// identifiers bound it anyway.
	caps.MaximumInflight = math.MaxUint16
	caps.ReceiveMaximum = opts.ReceiveMaximum
	// See acks.go: acknowledgements carry no copy of the message's
	// properties.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	caps.TopicAliasMaximum = uint16(max(opts.TopicAliasMaximum, 0))
	caps.MaximumMessageExpiryInterval = int64(opts.MaxMessageExpiry / time.Second)
	if opts.MaxSessionExpiry > 0 {
		caps.MaximumSessionExpiryInterval = uint32(min(opts.MaxSessionExpiry/time.Second, math.MaxUint32))
	}
	if opts.MaxClients > 0 {
		caps.MaximumClients = opts.MaxClients
	}

	b := &Broker{
		opts:      opts,
		log:       opts.Logger,
		conns:     make(map[*clientConn]struct{}),
		doorConns: make(map[any]int),
		rate:      newRateLimiter(opts.MaxConnectionRate, opts.ConnectionRateInterval),
		auth:      newAuthGate(),
		refusals:  logLimiter{every: 10 * time.Second},
		drops:     logLimiter{every: time.Minute},

		warnSampler: newSampler(),
	}
	if policy == nil {
		policy = AnonymousPolicy{}
	}
	b.SetPolicy(policy)

	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 newMochiLogger(opts.Logger),
		SysTopicResendInterval: int64(max(opts.SysInterval/time.Second, 1)),
		InlineClient:           true,
		// The read buffer every connection holds from its first byte to
		// its last (idle.go).
		ClientNetReadBufferSize: mochiReadBuffer,
	})
	dispatch := &dispatchHook{b: b}
	if err := b.srv.AddHook(dispatch, nil); err != nil {
		return nil, err
	}
	var metrics *metricsHook
	if !opts.NoMetrics {
		metrics = &metricsHook{b: b}
		if err := b.srv.AddHook(metrics, nil); err != nil {
			return nil, err
		}
	}
	flow := &flowHook{b: b}
	if err := b.srv.AddHook(flow, nil); err != nil {
		return nil, err
	}
	// Before orderHook: it decides, in OnSessionEstablish, whether there is
	// a queue to reorder, and sessionHook may discard it first.
	// handoverHook after sessionHook: it moves only sessions that
	// sessionHook lets the new connection resume.
	ids, session, handover := &packetIDHook{}, &sessionHook{b: b}, &handoverHook{b: b}
	for _, h := range []mqtt.Hook{ids, session, handover, &retainedHook{b: b}, &backpressureHook{}} {
		if err := b.srv.AddHook(h, nil); err != nil {
			return nil, err
		}
	}
	// Protocol details mochi gets wrong or leaves out, one hook each; after
	// packetIDHook, so that what they write carries mochi's packet
	// identifiers, which packetIDHook maps back.
	check := &publishCheckHook{b: b}
	for _, hook := range []mqtt.Hook{
		check,                // publishcheck.go
		&keepaliveHook{b: b}, // keepalive.go
		newSharedHook(b),     // shared.go
	} {
		if err := b.srv.AddHook(hook, nil); err != nil {
			return nil, err
		}
	}
	order := &orderHook{b: b, holdAck: opts.Storage.Enabled()}
	if err := b.srv.AddHook(order, nil); err != nil {
		return nil, err
	}
	will := &willPropsHook{b: b}
	if err := b.srv.AddHook(will, nil); err != nil {
		return nil, err
	}
	// Each concern's changes to the packets mochi writes (encode.go); before
	// the storage hook and opts.Hooks, which see the packet as it will be
	// written.
	publish := new(publishEncoder)
	for _, h := range opts.Hooks {
		// They would see a placeholder, not the packet written.
		publish.off = publish.off || h.Provides(mqtt.OnPacketEncode) || h.Provides(mqtt.OnPacketSent)
	}
	encode := &encodeHook{dispatch: dispatch, ids: ids, session: session, handover: handover, acks: &ackEncoder{b: b}, order: order, will: will, publish: publish}
	if err := b.srv.AddHook(encode, nil); err != nil {
		return nil, err
	}
	// And to the packets mochi reads (read.go), before opts.Hooks, which
	// see the packet as mochi will process it.
	if err := b.srv.AddHook(&readHook{metrics: metrics, flow: flow, ids: ids, check: check}, nil); err != nil {
		return nil, err
	}
	if opts.Storage.Enabled() {
		// Opened here, once per broker; mochi reads it back in Serve and
		// closes it in Close.
		hook, config, err := opts.Storage.open()
		if err != nil {
			return nil, err
		}
		if err := b.srv.AddHook(hook, config); err != nil {
			return nil, fmt.Errorf("opening mqtt storage: %w", err)
		}
		order.store, b.store = hook, hook
		hook.caught = handover.caught
		if b.doorKeys, err = loadDoorKeys(opts.Storage.Path + ".doors"); err != nil {
			return nil, fmt.Errorf("opening mqtt storage: %w", err)
		}
	}
	for _, h := range opts.Hooks {
		if err := b.srv.AddHook(h, b.srv); err != nil {
			_ = b.srv.Close() // releases the storage file
			return nil, err
		}
	}
	// No mochi listeners: the doors hand connections to Serve, and Shutdown
	// disconnects every client itself before mochi's Close, which for a
	// registered listener calls Clients.GetByListener, which can deadlock
	// (MOCHI.md row 35).
	if err := b.srv.Serve(); err != nil {
		_ = b.srv.Close() // releases the storage file
		return nil, fmt.Errorf("starting mqtt broker: %w", err)
	}
	return b, nil
}

// SetPolicy makes p the policy in force: every later check uses p, and live
// sessions p no longer allows are disconnected (recheck.go). The returned
// function puts the previous policy back, but only while p is still in
// force, so a config that is replaced by a newer one cannot undo the newer
// one's policy.
func (b *Broker) SetPolicy(p Policy) (restore func()) {
	box := &policyBox{p}
	old := b.policy.Swap(box)
	if old != nil {
		go b.recheck(old.Policy, p) // see recheck.go
	}
	return func() {
		if old != nil {
			b.policy.CompareAndSwap(box, old)
		}
	}
}

// Policy returns the policy in force.
func (b *Broker) Policy() Policy { return b.policy.Load().Policy }

// Server gives access to the underlying mochi server, for publishing from
// inside the process and for reading its counters.
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Options returns the options the broker was created with (defaults filled).
func (b *Broker) Options() Options { return b.opts }

// Serve runs one client connection until the client leaves or the broker
// shuts down. The caller keeps conn open until Serve returns. A client that
// leaves normally gives a nil error.
func (b *Broker) Serve(conn net.Conn, info ConnInfo) error {
	if info.Door == "" {
		return errors.New("mqtt: connection without a door")
	}
	cc := &clientConn{Conn: conn, info: info, broker: b,
		writeQueue:   writeQueue{writeTimeout: b.opts.WriteTimeout},
		sessionState: sessionState{ids: new(inboundIDs), sent: new(sentIDs)}}
	defer cc.releaseID() // see takeover.go
	// Every connection's byte stream goes through the packet framing check:
	// it applies the door's own size limit, and it rejects a remaining
	// length of more than four bytes, which mochi would wait on until the
	// keepalive or CONNECT deadline.
	limit := b.opts.MaxPacketSize
	if lim := info.Limits.MaxPacketSize; lim > 0 && lim < limit {
		limit = lim
	}
	cc.m.door = b.metrics.door(info.Label())
	wire := conn
	if !b.opts.NoMetrics {
		wire = countingConn{Conn: conn, s: cc.m.door} // metrics.go
	}
	var ahead *readAhead
	if info.Door != DoorTLS {
		ahead = &readAhead{Conn: wire} // readahead.go
		wire = ahead
	}
	cc.q.keepFrom = chunkSize + 1 // TLS, WebSocket: coalesce into chunks
	if cc.socket = newRawSocket(info.Socket); cc.socket != nil {
		cc.q.keepFrom = 2 << 10 // written with writev: no need to copy
		if !b.opts.NoMetrics {
			cc.bytesOut = &cc.m.door.bytesOut
		}
	}
	cc.Conn = &packetLimitConn{Conn: wire, limit: limit, connectLimit: b.opts.MaxConnectSize, cc: cc, ahead: ahead}
	if err := b.admit(cc); err != nil {
		_ = conn.Close()
		if !errors.Is(err, ErrClosed) {
			b.refuse(cc, RefusedLimit)
			b.logRefusal(cc, err)
		}
		return err
	}
	defer b.release(cc)
	defer b.connEnded(cc) // metrics.go

	// mochi reads CONNECT with no deadline; after CONNECT it replaces this
	// one with the keepalive deadline. Only reads: writes have deadlines of
	// their own, and a write deadline left behind would fail the direct
	// writes to a socket once it passed (writer.go).
	_ = conn.SetReadDeadline(time.Now().Add(b.opts.ConnectTimeout))
	err := b.srv.EstablishConnection(string(info.Door), cc)
	cc.drain(false) // the door closes conn once Serve returns
	return normalizeErr(err)
}

// admit registers a new connection, unless the broker is shutting down or a
// limit refuses it.
func (b *Broker) admit(cc *clientConn) error {
	if !b.rate.allow(rateKey(cc.RemoteAddr()), time.Now()) {
		return ErrRateLimited
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closing:
		return ErrClosed
	case b.opts.MaxClients > 0 && int64(len(b.conns)) >= b.opts.MaxClients:
		// Counted before CONNECT, as mosquitto's max_connections counts
		// sockets: mochi's own limit only counts authenticated clients.
		return ErrBrokerFull
	case cc.info.Limits.MaxConnections > 0 && b.doorConns[cc.info.limitKey()] >= cc.info.Limits.MaxConnections:
		return ErrDoorFull
	}
	b.conns[cc] = struct{}{}
	b.doorConns[cc.info.limitKey()]++
	b.serving.Add(1)
	return nil
}

// release undoes admit when the connection's session is over.
func (b *Broker) release(cc *clientConn) {
	b.mu.Lock()
	delete(b.conns, cc)
	key := cc.info.limitKey()
	if b.doorConns[key]--; b.doorConns[key] == 0 {
		delete(b.doorConns, key) // keys of handlers of old configs
	}
	b.mu.Unlock()
	b.serving.Done()
}

// logRefusal logs a connection refused by a limit, at most once per
// interval for each reason and address, so that a flood of refused
// connections does not become a flood of log lines.
func (b *Broker) logRefusal(cc *clientConn, err error) {
	host := hostOf(cc.RemoteAddr())
	if b.refusals.allow(err.Error()+"\x00"+host, time.Now()) {
		b.log.Info("mqtt connection refused", "door", string(cc.info.Door), "remote", host, "reason", err.Error())
	}
}

// normalizeErr maps the ways a session ends normally to nil.
func normalizeErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, packets.ErrServerShuttingDown) || errors.Is(err, packets.ErrSessionTakenOver) ||
		errors.Is(err, packets.CodeDisconnect) {
		return nil
	}
	var code packets.Code
	if errors.As(err, &code) && code.Code == packets.CodeSuccess.Code {
		return nil
	}
	return err
}

// Clients returns the number of connections currently being served,
// including those that have not sent CONNECT yet.
func (b *Broker) Clients() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Shutdown disconnects every client and stops the broker. MQTT 5 clients get
// DISCONNECT with reason 0x8B (server shutting down); MQTT 3 clients, which
// have no server-sent DISCONNECT, see their connection closed. When ctx ends
// first, the remaining connections are closed hard. Only the first call does
// anything; later calls return its result.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.shutdownOnce.Do(func() { b.shutdownErr = b.shutdown(ctx) })
	return b.shutdownErr
}

func (b *Broker) shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.closing = true
	// A client that stopped reading blocks the broker's writes to it (and
	// the DISCONNECT below) until its keepalive deadline, possibly minutes:
	// give every write one common deadline, so any number of stalled
	// clients cost at most this long together.
	writeBy := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(writeBy) {
		writeBy = d
	}
	for cc := range b.conns {
		cc.capWrites(writeBy)
	}
	b.mu.Unlock()

	// A client that passed OnConnect's closing check before closing was set
	// may register with mochi at any time until its Serve returns: look
	// again every shutdownSweep, each client once, instead of leaving it to
	// the deadline.
	done := make(chan struct{})
	go func() { b.serving.Wait(); close(done) }()
	swept := make(map[*mqtt.Client]bool)
	var disconnecting sync.WaitGroup
	tick := time.NewTicker(shutdownSweep)
	defer tick.Stop()
	var err error
sweeping:
	for {
		b.sweep(swept, &disconnecting)
		select {
		case <-done:
			break sweeping
		case <-tick.C:
		case <-ctx.Done():
			err = fmt.Errorf("mqtt: closing remaining connections: %w", ctx.Err())
			b.closeConns(func(*clientConn) bool { return true })
			<-done
			break sweeping
		}
	}
	disconnecting.Wait()
	// No Serve is running any more, so mochi's own wait group is idle and
	// Close only stops hooks and storage (it has no listeners, MOCHI.md row 35).
	if cerr := b.srv.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// shutdownSweep is how often shutdown looks for clients that registered
// with mochi after it began.
const shutdownSweep = 50 * time.Millisecond

// sweep closes the connections that have not sent CONNECT (mochi does not
// know them) and disconnects every registered client not in swept, adding
// it there. In parallel, so that a stalled client's blocked write does not
// make the others miss the deadline.
func (b *Broker) sweep(swept map[*mqtt.Client]bool, disconnecting *sync.WaitGroup) {
	b.closeConns(func(cc *clientConn) bool { return !cc.established.Load() })
	for _, cl := range b.srv.Clients.GetAll() {
		if swept[cl] || cl.Net.Inline || cl.Closed() {
			continue
		}
		swept[cl] = true
		disconnecting.Go(func() {
			if cl.Properties.ProtocolVersion >= 5 {
				b.disconnect(cl, packets.ErrServerShuttingDown)
			} else {
				cl.Stop(packets.ErrServerShuttingDown)
			}
		})
	}
}

func (b *Broker) closeConns(which func(*clientConn) bool) {
	b.mu.Lock()
	var list []*clientConn
	for cc := range b.conns {
		if which(cc) {
			list = append(list, cc)
		}
	}
	b.mu.Unlock()
	for _, cc := range list {
		_ = cc.Close()
	}
}

func (b *Broker) isClosing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closing
}

// clientConn is a connection handed over by a door, carrying what the door
// knows about it to the hooks.
type clientConn struct {
	net.Conn
	info        ConnInfo
	broker      *Broker
	client      atomic.Pointer[Client]
	established atomic.Bool
	unlockID    func() // see takeover.go
	subscribing subscribing
	reads       readGate // readgate.go

	writeQueue                          // writer.go; its wmu also guards flowState and room
	flowState                           // flow.go
	enc          encodedPublishes       // encodepublish.go; guarded by wmu
	room         roomState              // backpressure.go
	resend       resendOrder            // storage.go
	sessionState                        // session.go
	feed         feedState              // retained.go
	m            connMetrics            // metrics.go
	authed       atomic.Pointer[authed] // recheck.go

	// ending is why the broker ends the connection (an error, see
	// Broker.disconnect), noted before it tells the client.
	ending atomic.Value

	// refusedPublish is the topic of the MQTT 3 publish being processed
	// that the ACL refused (publishcheck.go); mochi's read loop only.
	refusedPublish string
}

// disconnect sends cl a DISCONNECT with code and ends its connection. The
// cause is noted first: the DISCONNECT may be written to the socket at once
// (writer.go), and a client that closes its side on reading it must not
// make its read loop's EOF pass for the reason (metrics, logs).
func (b *Broker) disconnect(cl *mqtt.Client, code packets.Code) {
	noteEnding(cl, code)
	_ = b.srv.DisconnectClient(cl, code)
}

// noteEnding notes why the broker ends cl's connection (see disconnect).
func noteEnding(cl *mqtt.Client, cause error) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.ending.CompareAndSwap(nil, cause)
	}
}

// RemoteAddr reports the client's real address when the door knows it.
func (c *clientConn) RemoteAddr() net.Addr {
	if c.info.RemoteAddr != nil {
		return c.info.RemoteAddr
	}
	return c.Conn.RemoteAddr()
}
