package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

// What the admin API (caddymqtt/admin.go) asks of the broker.

var (
	// ErrUnknownClient: no session has that client id.
	ErrUnknownClient = errors.New("no such client")
	// ErrNotConnected: the session exists but has no connection to close.
	ErrNotConnected = errors.New("client is not connected")
	// ErrTooLarge: the message would exceed max_packet_size.
	ErrTooLarge = errors.New("message larger than max_packet_size")
	// ErrNoRetained: no retained message on that topic.
	ErrNoRetained = errors.New("no retained message on that topic")
)

// ClientInfo describes one session.
type ClientInfo struct {
	ID             string     `json:"id"`
	Username       string     `json:"username"`
	Door           string     `json:"door"`
	Remote         string     `json:"remote"`
	Protocol       int        `json:"protocol"`
	Connected      bool       `json:"connected"`
	ConnectedSince *time.Time `json:"connected_since,omitempty"`
	Subscriptions  int        `json:"subscriptions"`
	Inflight       int        `json:"inflight"`
	Queued         int        `json:"queued"`

	// Filled by Client only.
	SubscriptionList []SubscriptionInfo `json:"subscription_list,omitempty"`
}

// SubscriptionInfo is one subscription of a session.
type SubscriptionInfo struct {
	Filter            string `json:"filter"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	RetainHandling    byte   `json:"retain_handling,omitempty"`
	Identifier        int    `json:"identifier,omitempty"`
}

func (b *Broker) clientInfo(cl *mqtt.Client) ClientInfo {
	door, inflight, queued := b.heldMessages(cl)
	ci := ClientInfo{
		ID:            cl.ID,
		Username:      string(cl.Properties.Username),
		Door:          door,
		Remote:        cl.Net.Remote,
		Protocol:      int(cl.Properties.ProtocolVersion),
		Connected:     !cl.Closed(),
		Subscriptions: cl.State.Subscriptions.Len(),
		Inflight:      inflight,
		Queued:        queued,
	}
	if cc, ok := cl.Net.Conn.(*clientConn); ok {
		ci.Remote = cc.RemoteAddr().String()
		if ns := cc.m.since.Load(); ns > 0 && ci.Connected {
			t := time.Unix(0, ns).UTC()
			ci.ConnectedSince = &t
		}
	}
	return ci
}

// ClientList lists every session (connected, or disconnected and kept),
// sorted by client id.
func (b *Broker) ClientList() []ClientInfo {
	var out []ClientInfo
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		out = append(out, b.clientInfo(cl))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Client describes one session with its subscriptions.
func (b *Broker) Client(id string) (ClientInfo, error) {
	cl, ok := b.srv.Clients.Get(id)
	if !ok || cl.Net.Inline {
		return ClientInfo{}, ErrUnknownClient
	}
	ci := b.clientInfo(cl)
	ci.SubscriptionList = []SubscriptionInfo{}
	for _, s := range cl.State.Subscriptions.GetAll() {
		ci.SubscriptionList = append(ci.SubscriptionList, SubscriptionInfo{
			Filter: s.Filter, QoS: s.Qos, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished,
			RetainHandling: s.RetainHandling, Identifier: s.Identifier,
		})
	}
	sort.Slice(ci.SubscriptionList, func(i, j int) bool { return ci.SubscriptionList[i].Filter < ci.SubscriptionList[j].Filter })
	return ci, nil
}

// Kick disconnects a client: MQTT 5 clients get DISCONNECT with reason 0x98
// (administrative action), MQTT 3 clients, which have no server DISCONNECT,
// see the connection closed. With discard, its session (subscriptions and
// held messages, in storage too) is dropped as if it had expired; without,
// a persistent session stays for the client to resume. A disconnected
// session can only be discarded.
func (b *Broker) Kick(ctx context.Context, id string, discard bool) error {
	cl, ok := b.srv.Clients.Get(id)
	if !ok || cl.Net.Inline {
		return ErrUnknownClient
	}
	cc, _ := cl.Net.Conn.(*clientConn)
	if !cl.Closed() {
		if cl.Properties.ProtocolVersion >= 5 {
			b.disconnect(cl, packets.ErrAdministrativeAction)
		} else {
			noteEnding(cl, packets.ErrAdministrativeAction)
			cl.Stop(packets.ErrAdministrativeAction)
		}
	} else if !discard {
		return ErrNotConnected
	}
	if !discard {
		return nil
	}
	// Wait until the connection's goroutine is done with the session
	// (mochi's OnDisconnect hooks write it to storage), so that nothing
	// writes it back after it is dropped.
	if cc != nil {
		for b.serves(cc) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	// A new CONNECT with this id waits for the id's lock before it takes
	// the session over (takeover.go); one that came first has a session
	// that is not the one asked about.
	unlock := b.ids.Lock(id)
	defer unlock()
	if cur, ok := b.srv.Clients.Get(id); !ok || cur != cl {
		return nil
	}
	b.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
	b.srv.Clients.Delete(id)
	if b.store != nil {
		b.store.OnClientExpired(cl) // what mochi does for an expired session
	}
	return nil
}

func (b *Broker) serves(cc *clientConn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.conns[cc]
	return ok
}

// RetainedInfo is one retained message.
type RetainedInfo struct {
	Topic   string `json:"topic"`
	QoS     byte   `json:"qos"`
	Size    int    `json:"size"`
	Payload []byte `json:"payload"` // base64 in JSON
}

// Retained lists the retained messages whose topics match filter.
func (b *Broker) Retained(filter string) ([]RetainedInfo, error) {
	if err := auth.ValidFilter(filter); err != nil {
		return nil, err
	}
	out := []RetainedInfo{}
	for _, pk := range b.srv.Topics.Messages(filter) {
		out = append(out, RetainedInfo{Topic: pk.TopicName, QoS: pk.FixedHeader.Qos, Size: len(pk.Payload), Payload: pk.Payload})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}

// DeleteRetained removes the retained message of topic by publishing an
// empty retained message to it, as `mosquitto_pub -r -n` does: storage
// forgets it, and current subscribers receive the empty message as MQTT
// prescribes [MQTT-3.3.1-6].
func (b *Broker) DeleteRetained(topic string) error {
	if err := ValidPublishTopic(topic); err != nil {
		return err
	}
	if _, ok := b.srv.Topics.Retained.Get(topic); !ok {
		return ErrNoRetained
	}
	return b.Publish(AdminMessage{Topic: topic, Retain: true})
}

// AdminMessage is a message published by the operator (admin API).
type AdminMessage struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// MQTT 5 properties; MQTT 3 subscribers receive the message without.
	Properties packets.Properties
}

// ValidPublishTopic checks a topic the operator publishes to: a valid topic
// name without wildcards [MQTT-3.3.2-2], not a $ topic (those are the
// broker's own).
func ValidPublishTopic(topic string) error {
	if topic == "" {
		return errors.New("topic must not be empty")
	}
	if err := auth.ValidTopicName(topic); err != nil {
		return err
	}
	if strings.HasPrefix(topic, "$") {
		return errors.New("topics starting with $ belong to the broker")
	}
	return nil
}

// Publish delivers m through mochi's inline client, as if a client had
// published it with every permission.
func (b *Broker) Publish(m AdminMessage) error {
	if err := ValidPublishTopic(m.Topic); err != nil {
		return err
	}
	if m.QoS > 2 {
		return fmt.Errorf("qos %d: must be 0, 1 or 2", m.QoS)
	}
	inline, ok := b.srv.Clients.Get(mqtt.InlineClientId)
	if !ok {
		return errors.New("broker has no inline client")
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		Properties:  m.Properties,
		// mochi does not acknowledge the inline client's publishes but
		// checks that QoS 1/2 ones carry a packet id.
		PacketID: uint16(m.QoS),
	}
	// The size a subscriber would receive, properties included, against
	// the broker's packet limit.
	enc := pk
	enc.ProtocolVersion = 5
	enc.PacketID = 1
	var buf bytes.Buffer
	if err := enc.PublishEncode(&buf); err != nil {
		return err
	}
	if max := b.opts.MaxPacketSize; max > 0 && uint32(buf.Len()) > max {
		return fmt.Errorf("%w (%d bytes > %d)", ErrTooLarge, buf.Len(), max)
	}
	return b.srv.InjectPacket(inline, pk)
}
