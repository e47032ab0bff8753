package broker

import (
	"errors"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// Why a connection was refused before it became a session
// (caddy_mqtt_connections_refused_total{reason}).
const (
	RefusedAuth     = "auth"     // bad or missing credentials
	RefusedACL      = "acl"      // the will topic is not allowed
	RefusedLimit    = "limit"    // max_connections, connection rate, login slots
	RefusedProtocol = "protocol" // no valid CONNECT (malformed, timeout, bad client id)
	RefusedTLS      = "tls"      // no verified certificate where one names the user
)

var refusedReasons = []string{RefusedAuth, RefusedACL, RefusedLimit, RefusedProtocol, RefusedTLS}

// Why a session's connection ended (caddy_mqtt_disconnects_total{reason}).
const (
	DisconnectNormal    = "normal"    // the client sent DISCONNECT
	DisconnectEOF       = "eof"       // the client closed the connection without DISCONNECT
	DisconnectKeepalive = "keepalive" // nothing read within the keepalive
	DisconnectTakeover  = "takeover"  // a new connection took the client id
	DisconnectAdmin     = "admin"     // kicked through the admin API
	DisconnectShutdown  = "shutdown"  // the broker stopped
	DisconnectProtocol  = "protocol"  // protocol error or refused packet
	DisconnectWrite     = "write"     // the client did not take data in time
	DisconnectError     = "error"     // anything else
)

var disconnectReasons = []string{DisconnectNormal, DisconnectEOF, DisconnectKeepalive, DisconnectTakeover,
	DisconnectAdmin, DisconnectShutdown, DisconnectProtocol, DisconnectWrite, DisconnectError}

// authBuckets are the auth latency histogram's upper bounds in seconds: from
// an anonymous or certificate login (microseconds) to a PBKDF2, bcrypt or
// argon2id hash waiting for a login slot (up to the CONNECT timeout).
var authBuckets = []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// doorStats are one door's counters. They live in the broker, which lives
// across config reloads, so they only ever grow; the Caddy side reads them
// into whichever registry the current config has.
type doorStats struct {
	name        string
	connected   atomic.Int64
	accepted    atomic.Uint64
	refused     [5]atomic.Uint64 // refusedReasons
	disconnects [9]atomic.Uint64 // disconnectReasons
	takeovers   atomic.Uint64
	msgsIn      [3]atomic.Uint64 // by QoS
	msgsOut     [3]atomic.Uint64
	payloadIn   [3]atomic.Uint64
	payloadOut  [3]atomic.Uint64
	bytesIn     atomic.Uint64
	bytesOut    atomic.Uint64

	authCount  atomic.Uint64
	authSumNs  atomic.Uint64
	authBucket [15]atomic.Uint64 // authBuckets, not cumulative
}

// metrics holds the broker's counters per door label.
type metrics struct {
	mu    sync.Mutex
	doors map[string]*doorStats

	droppedBuffer  atomic.Uint64 // mochi dropped a message to a client's full write buffer
	droppedExpired atomic.Uint64 // a held QoS 1/2 message expired
}

func (m *metrics) door(name string) *doorStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.doors == nil {
		m.doors = make(map[string]*doorStats)
	}
	d := m.doors[name]
	if d == nil {
		d = &doorStats{name: name}
		m.doors[name] = d
	}
	return d
}

func (m *metrics) all() []*doorStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*doorStats, 0, len(m.doors))
	for _, d := range m.doors {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// connMetrics is what a connection carries for the metrics and logs.
type connMetrics struct {
	door *doorStats
	// state: 0 new, 1 a session (counted as connected), 2 refused or
	// ended; each connection is counted once.
	state          atomic.Uint32
	since          atomic.Int64 // unix ns of the CONNACK
	sessionPresent atomic.Bool
	protocol       atomic.Uint32
}

// Label is the name the connection's door carries in metrics, logs and the
// admin API: its configured name, else its kind (ws, wss, tcp, tls).
func (i ConnInfo) Label() string {
	if i.Name != "" {
		return i.Name
	}
	return string(i.Door)
}

// refuse counts a connection refused for reason, once.
func (b *Broker) refuse(cc *clientConn, reason string) {
	if cc == nil || !cc.m.state.CompareAndSwap(0, 2) {
		return
	}
	for i, r := range refusedReasons {
		if r == reason {
			cc.m.door.refused[i].Add(1)
		}
	}
}

// connEnded runs when Serve is done with a connection: one that never
// became a session and was not refused for a known reason sent no valid
// CONNECT.
func (b *Broker) connEnded(cc *clientConn) {
	if !b.isClosing() {
		b.refuse(cc, RefusedProtocol)
	}
}

// observeAuth records how long a login check took.
func (b *Broker) observeAuth(cl *mqtt.Client, d time.Duration) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	s := cc.m.door
	s.authCount.Add(1)
	s.authSumNs.Add(uint64(d))
	sec := d.Seconds()
	for i, ub := range authBuckets {
		if sec <= ub {
			s.authBucket[i].Add(1)
			return
		}
	}
}

// countingConn counts a door's bytes on the wire (the MQTT stream, inside
// TLS and WebSocket framing).
type countingConn struct {
	net.Conn
	s *doorStats
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.bytesIn.Add(uint64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.s.bytesOut.Add(uint64(n))
	return n, err
}

// metricsHook counts sessions, messages and drops, and logs connects and
// disconnects (see connlog.go).
type metricsHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *metricsHook) ID() string { return "caddy-mqtt-metrics" }

func (h *metricsHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnPacketSent, mqtt.OnPublishDropped, mqtt.OnQosDropped, mqtt.OnSubscribed:
		return true
	}
	return false
}

// OnSessionEstablish notes the protocol version; whether a session was
// resumed is known once the CONNACK is encoded (session.go).
func (h *metricsHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		cc.m.protocol.Store(uint32(cl.Properties.ProtocolVersion))
	}
}

// OnSessionEstablished runs once the CONNACK is out: the connection is a
// session.
func (h *metricsHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok || !cc.m.state.CompareAndSwap(0, 1) {
		return
	}
	cc.m.since.Store(time.Now().UnixNano())
	cc.m.door.accepted.Add(1)
	cc.m.door.connected.Add(1)
	h.b.logConnected(cl, cc)
}

func (h *metricsHook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok || !cc.m.state.CompareAndSwap(1, 2) {
		return
	}
	reason := disconnectReason(cl, cc, err)
	s := cc.m.door
	s.connected.Add(-1)
	for i, r := range disconnectReasons {
		if r == reason {
			s.disconnects[i].Add(1)
		}
	}
	if reason == DisconnectTakeover {
		s.takeovers.Add(1)
	}
	h.b.logDisconnected(cl, cc, reason, err)
}

// read counts a PUBLISH read (called by readHook, read.go).
func (h *metricsHook) read(cl *mqtt.Client, pk *packets.Packet) {
	if pk.FixedHeader.Qos < 3 {
		if cc, ok := cl.Net.Conn.(*clientConn); ok {
			cc.m.door.msgsIn[pk.FixedHeader.Qos].Add(1)
			cc.m.door.payloadIn[pk.FixedHeader.Qos].Add(uint64(len(pk.Payload)))
		}
	}
}

// OnPacketSent counts the PUBLISH packets mochi has written. For those
// written in place of a placeholder (QoS 3, encodepublish.go) it sees the
// placeholder; sendEncoded counts them.
func (h *metricsHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos < 3 {
		if cc, ok := cl.Net.Conn.(*clientConn); ok {
			cc.m.sent(pk.FixedHeader.Qos, len(pk.Payload))
		}
	}
}

// sent counts a PUBLISH written to the client.
func (m *connMetrics) sent(qos byte, payload int) {
	m.door.msgsOut[qos].Add(1)
	m.door.payloadOut[qos].Add(uint64(payload))
}

func (h *metricsHook) OnPublishDropped(*mqtt.Client, packets.Packet) {
	h.b.metrics.droppedBuffer.Add(1)
}

// OnQosDropped is also called for acknowledgements; only a PUBLISH is a
// message that expired before delivery.
func (h *metricsHook) OnQosDropped(_ *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Publish {
		h.b.metrics.droppedExpired.Add(1)
	}
}

// OnSubscribed logs filters the ACL refused.
func (h *metricsHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, code := range codes {
		if code == packets.ErrNotAuthorized.Code && i < len(pk.Filters) {
			h.b.logDenied(cl, pk.Filters[i].Filter, AccessSubscribe)
		}
	}
}

// disconnectReason names why a session's connection ended, from the reason
// it was stopped with (takeover, admin, shutdown, DISCONNECT) or else from
// the error that ended its reads.
func disconnectReason(cl *mqtt.Client, cc *clientConn, err error) string {
	cause := cl.StopCause()
	ending, _ := cc.ending.Load().(error)
	for _, e := range []error{ending, cause, err} {
		switch {
		case e == nil:
			continue
		case errors.Is(e, packets.ErrSessionTakenOver):
			return DisconnectTakeover
		case errors.Is(e, packets.ErrAdministrativeAction):
			return DisconnectAdmin
		case errors.Is(e, packets.ErrServerShuttingDown):
			return DisconnectShutdown
		case errors.Is(e, packets.CodeDisconnect), errors.Is(e, packets.CodeDisconnectWillMessage):
			return DisconnectNormal
		}
	}
	cc.wmu.Lock()
	werr := cc.werr
	cc.wmu.Unlock()
	if werr != nil {
		return DisconnectWrite
	}
	if err == nil {
		err = cause
	}
	var ne net.Error
	var code packets.Code
	switch {
	case err == nil:
		return DisconnectNormal
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return DisconnectEOF
	case errors.As(err, &ne) && ne.Timeout():
		return DisconnectKeepalive
	case errors.As(err, &code):
		if code.Code == packets.CodeSuccess.Code {
			return DisconnectNormal
		}
		return DisconnectProtocol
	}
	return DisconnectError
}

// Metric descriptions. Names follow Prometheus conventions: _total for
// counters, base units (bytes, seconds).
var (
	descConnected = prometheus.NewDesc("caddy_mqtt_clients_connected",
		"MQTT clients connected now, by door.", []string{"door"}, nil)
	descAccepted = prometheus.NewDesc("caddy_mqtt_connections_accepted_total",
		"Connections that became MQTT sessions (CONNACK success sent).", []string{"door"}, nil)
	descRefused = prometheus.NewDesc("caddy_mqtt_connections_refused_total",
		"Connections refused before they became sessions, by reason (auth, acl, limit, protocol, tls).", []string{"door", "reason"}, nil)
	descDisconnects = prometheus.NewDesc("caddy_mqtt_disconnects_total",
		"Sessions whose connection ended, by reason.", []string{"door", "reason"}, nil)
	descTakeovers = prometheus.NewDesc("caddy_mqtt_session_takeovers_total",
		"Connections closed because a new connection took over their client id.", []string{"door"}, nil)
	descMsgsIn = prometheus.NewDesc("caddy_mqtt_messages_received_total",
		"PUBLISH packets received from clients, by QoS.", []string{"door", "qos"}, nil)
	descMsgsOut = prometheus.NewDesc("caddy_mqtt_messages_sent_total",
		"PUBLISH packets written (or queued) to clients, by QoS.", []string{"door", "qos"}, nil)
	descPayloadIn = prometheus.NewDesc("caddy_mqtt_payload_received_bytes_total",
		"Payload bytes of PUBLISH packets received, by QoS.", []string{"door", "qos"}, nil)
	descPayloadOut = prometheus.NewDesc("caddy_mqtt_payload_sent_bytes_total",
		"Payload bytes of PUBLISH packets sent, by QoS.", []string{"door", "qos"}, nil)
	descBytesIn = prometheus.NewDesc("caddy_mqtt_received_bytes_total",
		"MQTT bytes read from clients (all packets, inside TLS and WebSocket framing).", []string{"door"}, nil)
	descBytesOut = prometheus.NewDesc("caddy_mqtt_sent_bytes_total",
		"MQTT bytes written to clients.", []string{"door"}, nil)
	descAuth = prometheus.NewDesc("caddy_mqtt_auth_duration_seconds",
		"Time to check a CONNECT's credentials, including the wait for a login slot.", []string{"door"}, nil)
	descSubs = prometheus.NewDesc("caddy_mqtt_subscriptions",
		"Subscriptions held by sessions, by the door they last came through.", []string{"door"}, nil)
	descInflight = prometheus.NewDesc("caddy_mqtt_inflight_messages",
		"QoS 1/2 messages written to connected clients and not yet acknowledged.", []string{"door"}, nil)
	descQueued = prometheus.NewDesc("caddy_mqtt_queued_messages",
		"QoS 1/2 messages waiting for a client: behind a full in-flight window, or for a disconnected session.", []string{"door"}, nil)
	descRetained = prometheus.NewDesc("caddy_mqtt_retained_messages",
		"Retained messages held by the broker.", nil, nil)
	descDropped = prometheus.NewDesc("caddy_mqtt_messages_dropped_total",
		"Messages not delivered to a subscriber, by reason: queue_full (max_queued_messages), write_buffer_full, expired.", []string{"reason"}, nil)
)

var allDescs = []*prometheus.Desc{descConnected, descAccepted, descRefused, descDisconnects, descTakeovers,
	descMsgsIn, descMsgsOut, descPayloadIn, descPayloadOut, descBytesIn, descBytesOut, descAuth,
	descSubs, descInflight, descQueued, descRetained, descDropped}

var qosLabels = [3]string{"0", "1", "2"}

// Collector is a prometheus.Collector for a broker that may not exist yet
// or may be replaced: get returns the current one, or nil. Registering a new
// Collector on every config's registry keeps the series monotonic across
// reloads, because the counters live in the broker.
type Collector struct {
	get func() *Broker
}

// NewCollector returns a Collector reading whatever broker get returns.
func NewCollector(get func() *Broker) *Collector { return &Collector{get: get} }

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads the broker's counters.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	b := c.get()
	if b == nil {
		return
	}
	b.collect(ch)
}

func (b *Broker) collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for _, s := range b.metrics.all() {
		gauge(descConnected, s.connected.Load(), s.name)
		counter(descAccepted, s.accepted.Load(), s.name)
		counter(descTakeovers, s.takeovers.Load(), s.name)
		counter(descBytesIn, s.bytesIn.Load(), s.name)
		counter(descBytesOut, s.bytesOut.Load(), s.name)
		for i, r := range refusedReasons {
			counter(descRefused, s.refused[i].Load(), s.name, r)
		}
		for i, r := range disconnectReasons {
			counter(descDisconnects, s.disconnects[i].Load(), s.name, r)
		}
		for q := range 3 {
			counter(descMsgsIn, s.msgsIn[q].Load(), s.name, qosLabels[q])
			counter(descMsgsOut, s.msgsOut[q].Load(), s.name, qosLabels[q])
			counter(descPayloadIn, s.payloadIn[q].Load(), s.name, qosLabels[q])
			counter(descPayloadOut, s.payloadOut[q].Load(), s.name, qosLabels[q])
		}
		buckets := make(map[float64]uint64, len(authBuckets))
		var cum uint64
		for i, ub := range authBuckets {
			cum += s.authBucket[i].Load()
			buckets[ub] = cum
		}
		// The count is read last and never below the buckets' sum, so a
		// scrape racing a login still gives a valid histogram.
		count := max(s.authCount.Load(), cum)
		ch <- prometheus.MustNewConstHistogram(descAuth, count, float64(s.authSumNs.Load())/1e9, buckets, s.name)
	}
	for door, g := range b.sessionGauges() {
		gauge(descSubs, g.subs, door)
		gauge(descInflight, g.inflight, door)
		gauge(descQueued, g.queued, door)
	}
	gauge(descRetained, atomic.LoadInt64(&b.srv.Info.Retained))
	buffer, expired := b.metrics.droppedBuffer.Load(), b.metrics.droppedExpired.Load()
	// Info.MessagesDropped counts both mochi's write-buffer drops and the
	// queue drops of flow.go.
	queue := uint64(max(atomic.LoadInt64(&b.srv.Info.MessagesDropped), 0))
	queue -= min(queue, buffer)
	counter(descDropped, queue, "queue_full")
	counter(descDropped, buffer, "write_buffer_full")
	counter(descDropped, expired, "expired")
}

type sessionGauge struct{ subs, inflight, queued int64 }

// sessionGauges sums subscriptions and held messages over mochi's sessions,
// by the door each last came through ("stored" for sessions restored from
// storage that have not reconnected). Computed at scrape time, so the
// message path pays nothing for them.
func (b *Broker) sessionGauges() map[string]sessionGauge {
	out := make(map[string]sessionGauge)
	for _, s := range b.metrics.all() {
		out[s.name] = sessionGauge{}
	}
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		door, inflight, queued := b.heldMessages(cl)
		g := out[door]
		g.subs += int64(cl.State.Subscriptions.Len())
		g.inflight += int64(inflight)
		g.queued += int64(queued)
		out[door] = g
	}
	return out
}

// heldMessages splits what mochi holds for cl into messages in flight and
// messages queued behind the window (flow.go keeps both in mochi's store).
// A disconnected session has nothing in flight: all of it waits.
func (b *Broker) heldMessages(cl *mqtt.Client) (door string, inflight, queued int) {
	held := cl.State.Inflight.Len()
	cc, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return "stored", 0, held
	}
	if cl.Closed() {
		return cc.m.door.name, 0, held
	}
	cc.wmu.Lock()
	if cc.flow != nil {
		queued = cc.flow.queueLen()
	}
	cc.wmu.Unlock()
	queued = min(queued, held)
	return cc.m.door.name, held - queued, queued
}
