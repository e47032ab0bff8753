// Package caddymqtt is the Caddy side of caddy-mqtt: the "mqtt" app that owns
// the broker, the http.handlers.mqtt WebSocket door and the Caddyfile syntax.
package caddymqtt

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	mqtt "github.com/mochi-mqtt/server/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

func init() {
	caddy.RegisterModule(new(App))
}

// brokers holds the process's broker across config reloads: each config's
// App takes a reference in Provision and drops it in Cleanup, so the broker
// (and every session in it) lives as long as some loaded config uses it and
// is shut down when the last one goes (caddy stop).
var brokers = caddy.NewUsagePool()

const brokerKey = "mqtt"

// App is the "mqtt" app: one MQTT broker shared by every door (the
// http.handlers.mqtt WebSocket handler and the layer4.handlers.mqtt handler).
//
// Options marked "fixed" are read when the broker is first created; a reload
// that changes them logs a warning and they apply after a restart. The others
// apply on every reload without dropping a session, except the sessions the
// new users, ACL and allow_anonymous no longer admit (broker.Rechecker).
type App struct {
	// Allow clients that send no username (mosquitto's allow_anonymous).
	// Default false, as in mosquitto 2.x. A door's own allow_anonymous wins.
	AllowAnonymous bool `json:"allow_anonymous,omitempty"`

	// The largest MQTT packet a client may send, in bytes. Larger packets
	// close the connection before anything is allocated. Default 1 MiB. Fixed.
	MaxPacketSize int `json:"max_packet_size,omitempty"`

	// The largest CONNECT packet, in bytes: the first packet of a
	// connection, read before the client is authenticated. Its bytes are
	// buffered as they arrive, so a connection that announces a large
	// CONNECT holds only what it has sent; one announcing more than this is
	// closed at once. Default 64 KiB; at most max_packet_size. Fixed.
	MaxConnectSize int `json:"max_connect_size,omitempty"`

	// QoS 1 and 2 messages held for one client beyond those in flight
	// (mosquitto's max_queued_messages): while a connected client's window
	// is full, and for a disconnected persistent session. A message that
	// finds the queue full is dropped and counted in
	// $SYS/broker/messages/dropped. Default 1000. A door's own
	// max_queued_messages wins for its clients. QoS 0 messages are not
	// queued: a client that does not read loses them once its write buffer
	// (max_queued_messages + max_inflight_messages packets, at least 1000)
	// is full. Fixed.
	MaxQueuedMessages int `json:"max_queued_messages,omitempty"`

	// QoS 1 and 2 messages written to one client and not yet acknowledged,
	// at most (mosquitto's max_inflight_messages); later ones wait in the
	// client's queue, in order. An MQTT 5 client's smaller Receive Maximum
	// wins. Default 20, as in mosquitto. A door's own value wins for its
	// clients. Fixed.
	MaxInflightMessages int `json:"max_inflight_messages,omitempty"`

	// Most clients connected at once over all doors; 0 means no limit
	// (mosquitto's max_connections). Fixed.
	MaxConnections int `json:"max_connections,omitempty"`

	// Most subscriptions one client may hold; filters over it are refused
	// in the SUBACK (reason 0x87). 0 means no limit. Fixed.
	MaxSubscriptions int `json:"max_subscriptions,omitempty"`

	// The longest keep alive, in seconds, a client may ask for
	// (mosquitto's max_keepalive): an MQTT 5 client asking for more, or for
	// 0, is told this value in the CONNACK (Server Keep Alive); an MQTT 3
	// client is refused (return code 2), as mosquitto does. Default 65535:
	// no cap. A door's own max_keepalive wins for its clients. Fixed.
	MaxKeepalive int `json:"max_keepalive,omitempty"`

	// The highest topic alias an MQTT 5 client may use on its publishes,
	// advertised in the CONNACK; 0 turns client topic aliases off. Each
	// alias holds a topic name per client. Default 10. Fixed.
	TopicAliasMaximum *int `json:"topic_alias_maximum,omitempty"`

	// How many connections one client IP may open per
	// connection_rate_interval (default 1s): that many at once, then evenly
	// spread. Connections over it are closed at once. 0 means no limit.
	// Fixed.
	MaxConnectionRate      int            `json:"max_connection_rate,omitempty"`
	ConnectionRateInterval caddy.Duration `json:"connection_rate_interval,omitempty"`

	// How long a new connection may take to send CONNECT. Default 10s. Fixed.
	ConnectTimeout caddy.Duration `json:"connect_timeout,omitempty"`

	// How often $SYS topics are published. Default 10s. Fixed.
	SysInterval caddy.Duration `json:"sys_interval,omitempty"`

	// The longest a message (retained or queued) is kept when its publisher
	// set no expiry. Default 0: kept until replaced, as in mosquitto. Fixed.
	MaxMessageExpiry caddy.Duration `json:"max_message_expiry,omitempty"`

	// How long `caddy stop` waits for clients to be disconnected before it
	// closes the remaining connections. Default 3s.
	ShutdownTimeout caddy.Duration `json:"shutdown_timeout,omitempty"`

	// Where sessions, retained and in-flight messages are kept across
	// restarts. Default: memory only. Fixed. See storage.go.
	Storage *StorageConfig `json:"storage,omitempty"`

	// Host names the tls app should manage certificates for although no
	// HTTPS site names them, typically the names of layer4 tls routes
	// (mqtts://mqtt.example.com:8883). Internal names (localhost, *.local,
	// private IPs, ...) get Caddy's internal CA, others the tls app's
	// automation policies (ACME by default). See tlsnames.go.
	TLSNames []string `json:"tls_names,omitempty"`

	// Other Caddy nodes whose brokers form one with this one. Default:
	// none (a single node). Fixed. See cluster.go.
	Cluster *ClusterConfig `json:"cluster,omitempty"`

	// Users, ACL and certificate identity (password_file, acl_file, ...).
	AuthConfig

	shared   *sharedBroker
	reloaded bool // the broker was there before this config
	ctx      caddy.Context
	policy   broker.Policy
	restore  func()
	hooks    []mqtt.Hook // the cluster's; connected when the broker starts
	logger   *zap.Logger
	tlsApp   *caddytls.TLS
	l4Doors  layer4Doors // doorlog.go
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mqtt",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision takes a reference to the process's broker, creating the pooled
// value on first use. The broker itself is started lazily (see Broker), so
// `caddy validate` opens nothing.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.ctx = ctx
	if h, err := a.Cluster.hook(); err != nil {
		return err
	} else if h != nil {
		a.hooks = []mqtt.Hook{h}
	}
	opts := a.brokerOptions()
	val, loaded, err := brokers.LoadOrNew(brokerKey, func() (caddy.Destructor, error) {
		return &sharedBroker{opts: opts}, nil
	})
	if err != nil {
		return err
	}
	a.shared = val.(*sharedBroker)
	// Warned in Start: a config that fails validation or provisioning
	// changes nothing.
	a.reloaded = loaded
	// Read the password and ACL files now, so that `caddy validate` and a
	// failed reload report their errors; Start swaps the policy in.
	policy, err := a.BuildPolicy(a.AllowAnonymous)
	if err != nil {
		return err
	}
	a.policy = policy
	if err := a.registerMetrics(ctx); err != nil { // metrics.go
		return err
	}
	a.warnAnonymousUsernames()
	return a.provisionTLSNames(ctx)
}

// Validate checks the options.
func (a *App) Validate() error {
	switch {
	case a.MaxPacketSize < 0 || a.MaxPacketSize > maxPacketSizeLimit:
		return fmt.Errorf("max_packet_size %d out of range (0 to 256 MiB)", a.MaxPacketSize)
	case a.MaxConnectSize < 0 || a.MaxConnectSize > maxPacketSizeLimit:
		return fmt.Errorf("max_connect_size %d out of range (0 to 256 MiB)", a.MaxConnectSize)
	case a.MaxConnections < 0 || a.MaxSubscriptions < 0 || a.MaxConnectionRate < 0 || a.ConnectionRateInterval < 0:
		return fmt.Errorf("max_connections, max_subscriptions and max_connection_rate must not be negative")
	case a.ConnectTimeout < 0 || a.SysInterval < 0 || a.MaxMessageExpiry < 0 || a.ShutdownTimeout < 0:
		return fmt.Errorf("durations must not be negative")
	}
	if err := validateFlow(a.MaxInflightMessages, a.MaxQueuedMessages); err != nil {
		return err
	}
	if a.MaxKeepalive < 0 || a.MaxKeepalive > 65535 {
		return fmt.Errorf("max_keepalive %d out of range (0 to 65535)", a.MaxKeepalive)
	}
	if a.TopicAliasMaximum != nil && (*a.TopicAliasMaximum < 0 || *a.TopicAliasMaximum > 65535) {
		return fmt.Errorf("topic_alias_maximum %d out of range (0 to 65535)", *a.TopicAliasMaximum)
	}
	return a.Storage.validate()
}

// Start makes this config's policy the one in force. Sessions stay, unless
// the new policy no longer admits them (see broker.Broker.SetPolicy).
func (a *App) Start() error {
	b, err := a.shared.get(a.policy)
	if err != nil {
		return err
	}
	// Caddy does not call Stop on an app whose Start failed, so everything
	// that can fail comes before the policy swap.
	if err := a.manageTLSNames(); err != nil {
		return err
	}
	if a.reloaded {
		a.shared.warnFixedChanges(a.logger, a.brokerOptions())
	}
	a.shared.setShutdownTimeout(a.shutdownTimeout())
	a.logHTTPDoors(a.ctx) // doorlog.go
	a.guardIPSNI(a.ctx)   // ipsni.go
	a.l4Doors.log(a.logger)
	a.restore = b.SetPolicy(a.policy)
	return nil
}

// Stop leaves the broker running: on a reload the next config already uses
// it. If this config's policy is still in force (its config never went live,
// or nothing replaced it) the previous policy is put back.
func (a *App) Stop() error {
	if a.restore != nil {
		a.restore()
	}
	return nil
}

// Cleanup drops this config's reference to the broker; the last reference
// shuts it down.
func (a *App) Cleanup() error {
	_, err := brokers.Delete(brokerKey)
	return err
}

// AppFrom returns the mqtt app of the config being provisioned, loading it
// with its defaults when the config has none. The doors call it from their
// Provision.
func AppFrom(ctx caddy.Context) (*App, error) {
	app, err := ctx.App("mqtt")
	if err != nil {
		return nil, err
	}
	return app.(*App), nil
}

// Broker returns the running broker, starting it on first use.
func (a *App) Broker() (*broker.Broker, error) { return a.shared.get(a.policy) }

func (a *App) brokerOptions() broker.Options {
	return broker.Options{
		MaxPacketSize:          uint32(a.MaxPacketSize),
		MaxConnectSize:         uint32(a.MaxConnectSize),
		MaxQueuedMessages:      int32(a.MaxQueuedMessages),
		MaxInflightMessages:    uint16(a.MaxInflightMessages),
		MaxClients:             int64(a.MaxConnections),
		MaxSubscriptions:       a.MaxSubscriptions,
		MaxKeepalive:           uint16(a.MaxKeepalive),
		TopicAliasMaximum:      topicAliasMaximum(a.TopicAliasMaximum),
		MaxConnectionRate:      a.MaxConnectionRate,
		ConnectionRateInterval: time.Duration(a.ConnectionRateInterval),
		ConnectTimeout:         time.Duration(a.ConnectTimeout),
		SysInterval:            time.Duration(a.SysInterval),
		MaxMessageExpiry:       time.Duration(a.MaxMessageExpiry),
		Storage:                a.Storage.brokerStorage(),
		Hooks:                  a.hooks,
		Logger:                 slog.New(zapslog.NewHandler(caddy.Log().Core(), zapslog.WithName("mqtt.broker"))),
	}.WithDefaults()
}

// topicAliasMaximum maps the app's setting (nil: default, 0: off) to the
// broker's (0: default, negative: off).
func topicAliasMaximum(n *int) int {
	switch {
	case n == nil:
		return 0
	case *n == 0:
		return -1
	}
	return *n
}

// defaultShutdownTimeout keeps `caddy stop` well within 5 s.
const defaultShutdownTimeout = 3 * time.Second

func (a *App) shutdownTimeout() time.Duration {
	if a.ShutdownTimeout > 0 {
		return time.Duration(a.ShutdownTimeout)
	}
	return defaultShutdownTimeout
}

// sharedBroker is the pooled value. The broker is created on first use rather
// than in Provision so that validating a config starts nothing.
type sharedBroker struct {
	opts broker.Options

	mu              sync.Mutex
	b               *broker.Broker
	err             error
	destroyed       bool
	shutdownTimeout time.Duration

	// live is b once created, until Destruct: every new connection asks
	// for the broker, and with the mutex alone that was a lock shared by
	// all of them (3.6 % of the CPU at 10k connections/s, most of it
	// waking goroutines that waited for it).
	live atomic.Pointer[broker.Broker]
}

// get returns the broker, creating it with policy in force if there is
// none yet. Caddy starts the apps in no set order: a door of this config can
// be serving before this app's Start, and the broker it creates must not
// refuse every client until then (it did, with the empty policy).
func (s *sharedBroker) get(policy broker.Policy) (*broker.Broker, error) {
	if b := s.live.Load(); b != nil {
		return b, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.destroyed {
		// A door of an unloaded config still asking: starting a broker
		// now would leave one that nothing shuts down (holding the
		// storage lock the next config needs).
		return nil, broker.ErrClosed
	}
	if s.b == nil && s.err == nil {
		s.b, s.err = broker.New(s.opts, policy)
		if s.err == nil {
			s.live.Store(s.b)
		}
	}
	return s.b, s.err
}

func (s *sharedBroker) setShutdownTimeout(d time.Duration) {
	s.mu.Lock()
	s.shutdownTimeout = d
	s.mu.Unlock()
}

// warnFixedChanges tells the operator which options of a reload only apply
// after a restart.
func (s *sharedBroker) warnFixedChanges(log *zap.Logger, next broker.Options) {
	cur := s.opts
	cur.Logger, next.Logger = nil, nil
	warnStorageChange(log, cur.Storage, next.Storage)
	cur.Storage, next.Storage = broker.Storage{}, broker.Storage{}
	if (cur.Hooks == nil) != (next.Hooks == nil) {
		log.Warn("cluster added or removed; it applies after a restart")
	}
	cur.Hooks, next.Hooks = nil, nil
	if !reflect.DeepEqual(cur, next) {
		log.Warn("broker limits changed; they apply after a restart, running sessions keep the old ones",
			zap.Any("running", cur), zap.Any("configured", next))
	}
}

// Destruct shuts the broker down when the last config using it is unloaded.
func (s *sharedBroker) Destruct() error {
	s.mu.Lock()
	b, d := s.b, s.shutdownTimeout
	s.destroyed = true
	s.live.Store(nil)
	s.mu.Unlock()
	if b == nil {
		return nil
	}
	if d <= 0 {
		d = defaultShutdownTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return b.Shutdown(ctx)
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = (*sharedBroker)(nil)
)
