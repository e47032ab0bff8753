package broker

import (
	"log/slog"
	"math"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// Options are the broker settings that are fixed for the life of a broker.
// They are read once, when the broker is created; a Caddy config reload that
// changes them only takes effect after a restart.
type Options struct {
	// MaxPacketSize is the largest MQTT packet, in bytes, a client may send.
	// Larger packets are rejected from the fixed header, before anything is
	// allocated. Default 1 MiB; mochi's own default is unlimited.
	MaxPacketSize uint32

	// MaxConnectSize is the largest CONNECT packet, in bytes: the first
	// packet, read before the client is authenticated. Its bytes are
	// buffered as they arrive and handed to mochi once complete, so a
	// connection that announces a large CONNECT holds only what it has sent.
	// Default 64 KiB; it cannot raise MaxPacketSize.
	MaxConnectSize uint32

	// MaxQueuedMessages is the number of QoS 1/2 messages held for one
	// client beyond those in flight (mosquitto's max_queued_messages), for a
	// connected client waiting for its window and for a disconnected
	// persistent session; a message that finds the queue full is dropped
	// and counted. Default 1000. A door may set its own (DoorLimits).
	//
	// QoS 0 messages are never queued: they are written at once, and a
	// client that does not read loses them once its write buffer is full.
	// The buffer holds MaxQueuedMessages + MaxInflightMessages packets, at
	// least 1000, whatever the door's values.
	MaxQueuedMessages int32

	// MaxInflightMessages is the number of QoS 1/2 messages written to one
	// client and not yet acknowledged, at most (mosquitto's
	// max_inflight_messages; an MQTT 5 client's smaller Receive Maximum
	// wins). Default 20, as in mosquitto. A door may set its own.
	MaxInflightMessages uint16

	// ReceiveMaximum is the number of unacknowledged QoS 1/2 publishes the
	// broker accepts from one client at a time. Default 1024.
	ReceiveMaximum uint16

	// TopicAliasMaximum is the highest topic alias an MQTT 5 client may
	// set on its publishes; it is advertised in the CONNACK, and a client
	// that goes over it is disconnected with 0x94. mochi's default is
	// 65535 aliases per client, each holding a topic name: a cheap way to
	// make the broker hold memory. 0 means DefaultTopicAliasMaximum; a
	// negative value turns client topic aliases off (0x94 for any alias).
	TopicAliasMaximum int

	// MaxKeepalive is the longest keep alive, in seconds, a client may ask
	// for (mosquitto's max_keepalive): an MQTT 5 client asking for more, or
	// for 0, is told this value in the CONNACK's Server Keep Alive; an
	// MQTT 3 client is refused with return code 2 (identifier rejected), as
	// mosquitto does. 0 or 65535 means no cap. A door may set its own.
	MaxKeepalive uint16

	// MaxClients caps the connected clients over all doors (0 = no limit).
	MaxClients int64

	// ConnectTimeout is how long a new connection may take to send CONNECT.
	// Default 10 s.
	ConnectTimeout time.Duration

	// SysInterval is how often $SYS topics are published (mosquitto's
	// sys_interval). Default 10 s.
	SysInterval time.Duration

	// MaxMessageExpiry caps how long messages and retained messages are kept
	// when the publisher sets no expiry. Zero (the default) keeps them until
	// replaced, as mosquitto does; mochi's default deletes them after 24 h.
	MaxMessageExpiry time.Duration

	// MaxSessionExpiry caps how long a disconnected persistent session is
	// kept. Zero means no cap.
	MaxSessionExpiry time.Duration

	// WriteTimeout bounds each write to a client; a client that takes no
	// data for that long is disconnected. Default 30 s.
	WriteTimeout time.Duration

	// NoMetrics leaves out the per-door counters (metrics.go) and the
	// connect/disconnect log lines; it exists to measure their cost.
	NoMetrics bool

	// MaxSubscriptions caps the subscriptions one client holds (0 = no
	// limit). Filters over the cap are refused in the SUBACK.
	MaxSubscriptions int

	// MaxConnectionRate is how many connections one client IP may open per
	// ConnectionRateInterval (a token bucket: that many at once, then
	// evenly spread). 0 means no limit.
	MaxConnectionRate      int
	ConnectionRateInterval time.Duration

	// Storage keeps persistent sessions, retained and in-flight messages
	// across restarts. The zero value keeps them in memory only.
	Storage Storage

	// Logger receives the broker's logs. Default: slog.Default().
	Logger *slog.Logger

	// Hooks are added after the broker's own, in order (the cluster's, see
	// broker/cluster). Each one's Init receives the *mqtt.Server.
	Hooks []mqtt.Hook
}

// Defaults used when an Options field is zero.
const (
	DefaultMaxPacketSize       = 1 << 20
	DefaultMaxConnectSize      = 64 << 10
	DefaultMaxQueuedMessages   = 1000
	DefaultMaxInflightMessages = 20
	DefaultReceiveMaximum      = 1024
	DefaultConnectTimeout      = 10 * time.Second
	DefaultSysInterval         = 10 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultTopicAliasMaximum   = 10
)

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	if o.MaxConnectSize == 0 {
		o.MaxConnectSize = DefaultMaxConnectSize
	}
	if o.MaxQueuedMessages <= 0 {
		o.MaxQueuedMessages = DefaultMaxQueuedMessages
	}
	if o.MaxInflightMessages == 0 {
		o.MaxInflightMessages = DefaultMaxInflightMessages
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = DefaultReceiveMaximum
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.SysInterval <= 0 {
		o.SysInterval = DefaultSysInterval
	}
	if o.MaxConnectionRate > 0 && o.ConnectionRateInterval <= 0 {
		o.ConnectionRateInterval = time.Second
	}
	if o.TopicAliasMaximum == 0 {
		o.TopicAliasMaximum = DefaultTopicAliasMaximum
	} else if o.TopicAliasMaximum < 0 || o.TopicAliasMaximum > math.MaxUint16 {
		o.TopicAliasMaximum = min(max(o.TopicAliasMaximum, -1), math.MaxUint16)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}
