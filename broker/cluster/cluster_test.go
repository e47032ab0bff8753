package cluster_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
	"github.com/caddy-mqtt/caddy-mqtt/broker/cluster"
)

// startNATS runs a real NATS server with JetStream in the test process, on
// a free loopback port (or port, to restart one), storing in dir.
func startNATS(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

type node struct {
	b    *broker.Broker
	hook *cluster.Hook
	addr string
}

// startNode starts a broker joined to the cluster at url, served on a
// loopback TCP listener.
func startNode(t testing.TB, url, name string) *node {
	t.Helper()
	h, err := cluster.New(cluster.Config{URLs: []string{url}, Node: name})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Options{Hooks: []mqtt.Hook{h}, Logger: slog.New(slog.DiscardHandler)}, broker.AnonymousPolicy{Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = b.Serve(conn, broker.ConnInfo{Door: broker.DoorTCP})
			}()
		}
	}()
	return &node{b: b, hook: h, addr: ln.Addr().String()}
}

func startCluster(t testing.TB, n int) ([]*node, *server.Server) {
	ns := startNATS(t, t.TempDir(), 0)
	var nodes []*node
	for i := range n {
		nodes = append(nodes, startNode(t, ns.ClientURL(), fmt.Sprintf("n%d", i+1)))
	}
	return nodes, ns
}

// client is a paho MQTT 5 client that records what it receives.
type client struct {
	*paho.Client
	mu   sync.Mutex
	got  []*paho.Publish
	seen chan struct{}
	disc chan *paho.Disconnect
}

func connect(t *testing.T, n *node, id string, opts ...func(*paho.Connect)) *client {
	t.Helper()
	conn, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{seen: make(chan struct{}, 1), disc: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: conn,
		OnServerDisconnect: func(d *paho.Disconnect) { c.disc <- d },
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.got = append(c.got, r.Packet)
			c.mu.Unlock()
			select {
			case c.seen <- struct{}{}:
			default:
			}
			return true, nil
		}}})
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}
	for _, o := range opts {
		o(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ca, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v %+v", id, err, ca)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *client) subscribe(t *testing.T, qos byte, filters ...string) {
	t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range sa.Reasons {
		if r >= 0x80 {
			t.Fatalf("subscribe %s refused: %#x", filters[i], r)
		}
	}
}

func (c *client) publish(t *testing.T, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil && r == nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

func (c *client) messages() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.got...)
}

// publishN publishes n QoS 1 messages to topic, with payloads
// prefix-0 … prefix-(n-1), and returns the payloads.
func (c *client) publishN(t *testing.T, topic string, n int, prefix string) []string {
	t.Helper()
	var sent []string
	for i := range n {
		sent = append(sent, fmt.Sprintf("%s-%d", prefix, i))
		c.publish(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(sent[i])})
	}
	return sent
}

// takenOver waits up to d for the broker to close c with 0x8E, Session
// taken over; what names the connection when it does not.
func (c *client) takenOver(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case dc := <-c.disc:
		if dc.ReasonCode != 0x8E {
			t.Fatalf("%s closed with %#x, want 0x8E", what, dc.ReasonCode)
		}
	case <-time.After(d):
		t.Fatalf("%s not taken over within %v", what, d)
	}
}

// waitFor polls until c has received n messages, and fails after 15 s.
func (c *client) waitFor(t *testing.T, n int) []*paho.Publish {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if got := c.messages(); len(got) >= n {
			return got
		} else if time.Now().After(deadline) {
			t.Fatalf("received %d messages, want %d: %v", len(got), n, topics(got))
		}
		select {
		case <-c.seen:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// quiet checks that c receives nothing more than n messages for a while.
func (c *client) quiet(t *testing.T, n int) {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	if got := c.messages(); len(got) != n {
		t.Fatalf("received %d messages, want exactly %d: %v", len(got), n, topics(got))
	}
}

func topics(ps []*paho.Publish) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Topic+"="+string(p.Payload))
	}
	return out
}

func TestCrossNodeDeliveryAndProperties(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	sub := connect(t, nodes[0], "sub")
	// Overlapping filters on one node: NATS sends the node one copy per
	// subscription; the client must still get one message.
	sub.subscribe(t, 1, "a/+/c", "a/#", "odd topics/#")

	p2 := connect(t, nodes[1], "pub2")
	p3 := connect(t, nodes[2], "pub3")
	p1 := connect(t, nodes[0], "pub1")

	pf := byte(1)
	exp := uint32(3600)
	props := &paho.PublishProperties{ContentType: "application/json", ResponseTopic: "reply/here",
		CorrelationData: []byte{0, 1, 2, 0xff}, PayloadFormat: &pf, MessageExpiry: &exp,
		User: paho.UserProperties{{Key: "k=1", Value: "v ü"}, {Key: "k=1", Value: "second"}}}
	p2.publish(t, &paho.Publish{Topic: "a/b/c", QoS: 1, Payload: []byte(`{"from":2}`), Properties: props})
	got := sub.waitFor(t, 1)
	m := got[0]
	if m.Topic != "a/b/c" || string(m.Payload) != `{"from":2}` || m.QoS != 1 {
		t.Fatalf("got %s %q qos %d", m.Topic, m.Payload, m.QoS)
	}
	pp := m.Properties
	if pp == nil || pp.ContentType != "application/json" || pp.ResponseTopic != "reply/here" ||
		!bytes.Equal(pp.CorrelationData, props.CorrelationData) || pp.PayloadFormat == nil || *pp.PayloadFormat != 1 ||
		pp.MessageExpiry == nil || *pp.MessageExpiry < 3500 || *pp.MessageExpiry > 3600 ||
		len(pp.User) != 2 || pp.User[0] != props.User[0] || pp.User[1] != props.User[1] {
		t.Fatalf("properties lost on the way: %+v", pp)
	}

	// Another node, QoS 0, and a local publish: each arrives once (no echo
	// of the node's own publish coming back from NATS).
	p3.publish(t, &paho.Publish{Topic: "a/x/c", QoS: 0, Payload: []byte("3")}) // a/+/c and a/#: two NATS copies
	sub.waitFor(t, 2)
	p1.publish(t, &paho.Publish{Topic: "a/y/c", QoS: 1, Payload: []byte("1")})
	sub.waitFor(t, 3)

	// Characters NATS treats specially cross as they are.
	for i, topic := range []string{"odd topics/a.b", "odd topics/*", "odd topics/>", "odd topics//x", "odd topics/%41", "odd topics/tab\there/ü"} {
		p3.publish(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(topic)})
		got := sub.waitFor(t, 4+i)
		if last := got[len(got)-1]; last.Topic != topic || string(last.Payload) != topic {
			t.Fatalf("sent %q, got %q %q", topic, last.Topic, last.Payload)
		}
	}
	sub.quiet(t, 9)
	if s := nodes[0].hook.Stats(); s.Duplicates == 0 {
		t.Errorf("overlapping filters gave no duplicate to drop: %+v", s)
	}
}

func TestInterestFollowsSubscriptions(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sub := connect(t, nodes[0], "sub")
	sub.subscribe(t, 0, "x/+", "$share/g/y/#")
	has := func(f string) bool {
		for _, x := range nodes[0].hook.Filters() {
			if x == f {
				return true
			}
		}
		return false
	}
	if !has("x/+") || !has("$share/g/y/#") {
		t.Fatalf("no NATS interest after SUBSCRIBE: %v", nodes[0].hook.Filters())
	}
	other := connect(t, nodes[0], "sub2")
	other.subscribe(t, 0, "x/+")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sub.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"x/+", "$share/g/y/#"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for has("$share/g/y/#") {
		if time.Now().After(deadline) {
			t.Fatalf("NATS interest kept after UNSUBSCRIBE: %v", nodes[0].hook.Filters())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !has("x/+") {
		t.Fatal("interest dropped while another client holds the filter")
	}
	// Still delivered to the remaining holder.
	connect(t, nodes[1], "pub").publish(t, &paho.Publish{Topic: "x/1", QoS: 1, Payload: []byte("p")})
	other.waitFor(t, 1)
	_ = other.Disconnect(&paho.Disconnect{})
	deadline = time.Now().Add(20 * time.Second)
	for has("x/+") {
		if time.Now().After(deadline) {
			t.Fatalf("NATS interest kept after the last holder left: %v", nodes[0].hook.Filters())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSharedSubscriptionOncePerCluster(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	var members []*client
	for i, n := range nodes {
		m := connect(t, n, fmt.Sprintf("member%d", i))
		m.subscribe(t, 1, "$share/workers/jobs/#")
		members = append(members, m)
	}
	// A plain subscriber beside the group gets every message, once.
	plain := connect(t, nodes[1], "plain")
	plain.subscribe(t, 1, "jobs/#")
	pubs := []*client{connect(t, nodes[0], "p0"), connect(t, nodes[1], "p1"), connect(t, nodes[2], "p2")}
	const total = 300
	for i := range total {
		pubs[i%3].publish(t, &paho.Publish{Topic: fmt.Sprintf("jobs/%d", i%7), QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	plain.waitFor(t, total)
	seen := map[string]int{}
	deadline := time.Now().Add(15 * time.Second)
	for {
		clear(seen)
		n := 0
		for _, m := range members {
			for _, p := range m.messages() {
				seen[string(p.Payload)]++
				n++
			}
		}
		if n >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	n := 0
	for i, m := range members {
		got := len(m.messages())
		n += got
		if got == 0 {
			t.Errorf("member %d got nothing", i)
		}
	}
	if n != total || len(seen) != total {
		for _, nd := range nodes {
			t.Logf("%+v %v", nd.hook.Stats(), nd.hook.Filters())
		}
		t.Fatalf("group got %d messages, %d distinct, want %d once each", n, len(seen), total)
	}
	plain.quiet(t, total)
}

func TestRetainedAcrossNodes(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	p1 := connect(t, nodes[0], "p1")
	p1.publish(t, &paho.Publish{Topic: "state/door", QoS: 1, Retain: true, Payload: []byte("open"),
		Properties: &paho.PublishProperties{ContentType: "text/plain"}})
	// The bucket is watched asynchronously: poll with new subscribers.
	var got *paho.Publish
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; got == nil; i++ {
		s := connect(t, nodes[2], fmt.Sprintf("s3-%d", i))
		s.subscribe(t, 1, "state/#")
		select {
		case <-s.seen:
			got = s.messages()[0]
		case <-time.After(300 * time.Millisecond):
		}
		_ = s.Disconnect(&paho.Disconnect{})
		if got == nil && time.Now().After(deadline) {
			t.Fatal("retained message from node 1 never seen on node 3")
		}
	}
	if string(got.Payload) != "open" || !got.Retain || got.Properties.ContentType != "text/plain" {
		t.Fatalf("retained: %q retain=%v %+v", got.Payload, got.Retain, got.Properties)
	}

	// Cleared on node 2: gone everywhere.
	connect(t, nodes[1], "p2").publish(t, &paho.Publish{Topic: "state/door", QoS: 1, Retain: true})
	for _, n := range nodes {
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, ok := n.b.Server().Topics.Retained.Get("state/door"); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("retained message not cleared on every node")
			}
			time.Sleep(50 * time.Millisecond)
		}
		s := connect(t, n, "late")
		s.subscribe(t, 1, "state/#")
		s.quiet(t, 0)
		_ = s.Disconnect(&paho.Disconnect{})
	}

	// A node started later loads the bucket.
	p1.publish(t, &paho.Publish{Topic: "state/window", QoS: 0, Retain: true, Payload: []byte("shut")})
	time.Sleep(200 * time.Millisecond)
	late := startNode(t, nodes[0].hook.NATSURL(), "n4")
	s := connect(t, late, "s4")
	s.subscribe(t, 0, "state/window")
	if m := s.waitFor(t, 1)[0]; string(m.Payload) != "shut" {
		t.Fatalf("late node: %q", m.Payload)
	}
}

func TestWillCrossesNodes(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sub := connect(t, nodes[1], "watcher")
	sub.subscribe(t, 1, "wills/#")
	dying := connect(t, nodes[0], "dying", func(c *paho.Connect) {
		c.WillMessage = &paho.WillMessage{Topic: "wills/dying", QoS: 1, Payload: []byte("gone")}
	})
	// Closing the socket without DISCONNECT sends the will.
	_ = dying.Client.Disconnect(&paho.Disconnect{ReasonCode: 0x04})
	if m := sub.waitFor(t, 1)[0]; m.Topic != "wills/dying" || string(m.Payload) != "gone" {
		t.Fatalf("will: %s %q", m.Topic, m.Payload)
	}
}

func TestLosingNATS(t *testing.T) {
	dir := t.TempDir()
	ns := startNATS(t, dir, 0)
	port := ns.Addr().(*net.TCPAddr).Port
	n1 := startNode(t, ns.ClientURL(), "n1")
	n2 := startNode(t, ns.ClientURL(), "n2")
	local := connect(t, n1, "local")
	local.subscribe(t, 1, "t/#")
	remote := connect(t, n2, "remote")
	remote.publish(t, &paho.Publish{Topic: "t/1", QoS: 1, Payload: []byte("before")})
	local.waitFor(t, 1)

	ns.Shutdown()
	ns.WaitForShutdown()
	deadline := time.Now().Add(10 * time.Second)
	for n1.hook.Connected() || n2.hook.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("still connected to a stopped NATS")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Local traffic goes on; a QoS 1 publish is refused with 0x89 since the
	// other nodes cannot get it; QoS 0 is delivered locally.
	pub := connect(t, n1, "pub")
	if r := pub.publish(t, &paho.Publish{Topic: "t/2", QoS: 1, Payload: []byte("during")}); r.ReasonCode != 0x89 {
		t.Fatalf("QoS 1 publish without NATS: reason %#x, want 0x89", r.ReasonCode)
	}
	pub.publish(t, &paho.Publish{Topic: "t/3", QoS: 0, Payload: []byte("local")})
	if got := local.waitFor(t, 2); string(got[1].Payload) != "local" {
		t.Fatalf("local delivery without NATS: %q", got[1].Payload)
	}
	if n1.hook.Stats().PublishFailed < 2 {
		t.Fatalf("failures not counted: %+v", n1.hook.Stats())
	}

	// NATS back on the same port: cross-node delivery resumes, no restart.
	startNATS(t, dir, port)
	deadline = time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if n1.hook.Connected() && n2.hook.Connected() {
			remote.publish(t, &paho.Publish{Topic: "t/4", QoS: 0, Payload: []byte(fmt.Sprint("after", i))})
			select {
			case <-local.seen:
			case <-time.After(200 * time.Millisecond):
			}
			if got := local.messages(); len(got) > 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("cross-node delivery did not resume after NATS came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := remote.publish(t, &paho.Publish{Topic: "t/5", QoS: 1, Payload: []byte("acked")}); r.ReasonCode != 0 {
		t.Fatalf("QoS 1 after NATS is back: %#x", r.ReasonCode)
	}
}

func TestTakeoverAcrossNodes(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	first := connect(t, nodes[0], "device-7")
	first.subscribe(t, 1, "cmd/7")
	// The same client id on node 2: node 1's connection is closed with
	// 0x8E, Session taken over.
	second := connect(t, nodes[1], "device-7")
	first.takenOver(t, 15*time.Second, "node 1's connection")
	// The new connection stays, and gets what is published for it.
	second.subscribe(t, 1, "cmd/7")
	connect(t, nodes[2], "ctl").publish(t, &paho.Publish{Topic: "cmd/7", QoS: 1, Payload: []byte("go")})
	second.waitFor(t, 1)
	select {
	case d := <-second.disc:
		t.Fatalf("the newer connection was disconnected: %#x", d.ReasonCode)
	case <-time.After(500 * time.Millisecond):
	}
	// And back to node 1: node 2's is closed.
	third := connect(t, nodes[0], "device-7")
	second.takenOver(t, 15*time.Second, "node 2's connection")
	select {
	case d := <-third.disc:
		t.Fatalf("the newest connection was disconnected: %#x", d.ReasonCode)
	case <-time.After(500 * time.Millisecond):
	}
}

// A topic longer than NATS takes stays on its node and does not cut the
// node off NATS (the server closes connections with over-long lines).
func TestLongTopicStaysLocal(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	long := "long/" + strings.Repeat("x", 5000)
	local := connect(t, nodes[0], "local")
	local.subscribe(t, 1, "long/#", "short/#")
	remote := connect(t, nodes[1], "remote")
	remote.subscribe(t, 1, "long/#", "short/#", long)
	pub := connect(t, nodes[0], "pub")
	if r := pub.publish(t, &paho.Publish{Topic: long, QoS: 1, Payload: []byte("l")}); r.ReasonCode != 0x89 {
		t.Fatalf("QoS 1 publish on a topic NATS cannot carry: %#x, want 0x89", r.ReasonCode)
	}
	pub.publish(t, &paho.Publish{Topic: long, QoS: 0, Payload: []byte("l0")})
	local.waitFor(t, 1)
	pub.publish(t, &paho.Publish{Topic: "short/1", QoS: 1, Payload: []byte("s")})
	if got := remote.waitFor(t, 1); got[0].Topic != "short/1" {
		t.Fatalf("got %s", got[0].Topic)
	}
	if !nodes[0].hook.Connected() || !nodes[1].hook.Connected() {
		t.Fatal("a long topic cut a node off NATS")
	}
	remote.quiet(t, 1)
}

// Without JetStream the cluster still delivers across nodes; retained
// messages stay on their node and retained publishes are not refused.
func TestWithoutJetStream(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	n1 := startNode(t, ns.ClientURL(), "n1")
	n2 := startNode(t, ns.ClientURL(), "n2")
	sub := connect(t, n2, "sub")
	sub.subscribe(t, 1, "nojs/#")
	pub := connect(t, n1, "pub")
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := pub.publish(t, &paho.Publish{Topic: "nojs/r", QoS: 1, Retain: true, Payload: []byte("r")})
		if r.ReasonCode == 0 {
			break
		}
		if time.Now().After(deadline) { // until the node has found out there is no JetStream
			t.Fatalf("retained publish without JetStream: %#x", r.ReasonCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := sub.waitFor(t, 1)[0]; m.Topic != "nojs/r" {
		t.Fatalf("got %s", m.Topic)
	}
	if _, ok := n1.b.Server().Topics.Retained.Get("nojs/r"); !ok {
		t.Fatal("not retained on its own node")
	}
}

func persistentSession(c *paho.Connect) {
	c.CleanStart = false
	c.Properties = &paho.ConnectProperties{SessionExpiryInterval: paho.Uint32(600)}
}

// waitPayloads waits until c has received every payload of want (at least
// once), and fails after d.
func (c *client) waitPayloads(t *testing.T, d time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := map[string]bool{}
		for _, p := range c.messages() {
			got[string(p.Payload)] = true
		}
		var miss []string
		for _, w := range want {
			if !got[w] {
				miss = append(miss, w)
			}
		}
		if len(miss) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never arrived: %v", len(miss), len(want), miss)
		}
		select {
		case <-c.seen:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestSessionFollowsClient: a persistent session taken over on another
// node keeps its subscriptions there, and what is published while it is
// offline reaches it on the node it comes back to.
func TestSessionFollowsClient(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	pub := connect(t, nodes[2], "pub")
	first := connect(t, nodes[0], "device-9", persistentSession)
	first.subscribe(t, 1, "cmd/9/#")
	second := connect(t, nodes[1], "device-9", persistentSession)
	first.takenOver(t, 15*time.Second, "node 1's connection")
	// No SUBSCRIBE on node 2: the session's subscription came along.
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; len(second.messages()) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the session's subscription did not follow it to node 2")
		}
		pub.publish(t, &paho.Publish{Topic: "cmd/9/a", QoS: 1, Payload: fmt.Appendf(nil, "live-%d", i)})
		time.Sleep(200 * time.Millisecond)
	}
	// Offline, then back on node 3: what was published meanwhile arrives.
	_ = second.Disconnect(&paho.Disconnect{})
	time.Sleep(300 * time.Millisecond)
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("away-%d", i))
		pub.publish(t, &paho.Publish{Topic: "cmd/9/b", QoS: 1, Payload: []byte(want[i])})
	}
	// Another client of node 3 that subscribes now must not get them.
	other := connect(t, nodes[2], "bystander")
	other.subscribe(t, 1, "cmd/9/#")
	third := connect(t, nodes[2], "device-9", persistentSession)
	third.waitPayloads(t, 20*time.Second, want...)
	// And live there too.
	pub.publish(t, &paho.Publish{Topic: "cmd/9/c", QoS: 1, Payload: []byte("live-3")})
	third.waitPayloads(t, 15*time.Second, "live-3")
	other.waitPayloads(t, 15*time.Second, "live-3")
	for _, p := range other.messages() {
		if strings.HasPrefix(string(p.Payload), "away-") {
			t.Fatalf("a client that subscribed later got %q, queued for the moving session", p.Payload)
		}
	}
}

// TestSessionOfDeadNode: the node of a persistent session loses NATS for
// good (as if killed: it hands nothing over); what is published for the
// session meanwhile reaches the client when it connects on another node.
func TestSessionOfDeadNode(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	pub := connect(t, nodes[2], "pub")
	first := connect(t, nodes[0], "device-10", persistentSession)
	first.subscribe(t, 1, "cmd/10/+")
	pub.publish(t, &paho.Publish{Topic: "cmd/10/x", QoS: 1, Payload: []byte("before")})
	first.waitPayloads(t, 15*time.Second, "before")
	_ = nodes[0].hook.Stop() // node 1 is gone from the cluster
	want := pub.publishN(t, "cmd/10/y", 20, "while-down")
	second := connect(t, nodes[1], "device-10", persistentSession)
	second.waitPayloads(t, 20*time.Second, want...)
	pub.publish(t, &paho.Publish{Topic: "cmd/10/z", QoS: 1, Payload: []byte("after")})
	second.waitPayloads(t, 15*time.Second, "after")
}

// TestSubscribeDuringAdoption: a SUBSCRIBE acknowledged while the node is
// still finding out whether another node left the session (held here for
// half a second) is already in the session's record, so the node that takes
// the session over after this one died restores it.
func TestSubscribeDuringAdoption(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	cluster.HoldAdoptions(nodes[0].hook, 500*time.Millisecond)
	pub := connect(t, nodes[2], "pub")
	first := connect(t, nodes[0], "device-11", persistentSession)
	first.subscribe(t, 1, "cmd/11/+")
	_ = nodes[0].hook.Stop() // node 1 dies right after the SUBACK
	want := pub.publishN(t, "cmd/11/y", 5, "while-down")
	second := connect(t, nodes[1], "device-11", persistentSession)
	second.waitPayloads(t, 20*time.Second, want...)
}

// TestSlowAdoptionKeepsTheClient: a SUBSCRIBE waits for the session's
// adoption only for half the client's keepalive. The read deadline is one
// and a half keepalives after the SUBSCRIBE was read: waiting longer ended
// the connection at its next read.
func TestSlowAdoptionKeepsTheClient(t *testing.T) {
	nodes, _ := startCluster(t, 1)
	cluster.HoldAdoptions(nodes[0].hook, 4*time.Second)
	c := connect(t, nodes[0], "device-14", persistentSession, func(cp *paho.Connect) { cp.KeepAlive = 2 })
	c.subscribe(t, 1, "cmd/14/+")
	time.Sleep(4500 * time.Millisecond) // the adoption is over
	c.publish(t, &paho.Publish{Topic: "cmd/14/x", QoS: 1, Payload: []byte("still here")})
	c.waitPayloads(t, 10*time.Second, "still here")
	select {
	case d := <-c.disc:
		t.Fatalf("disconnected: %#x", d.ReasonCode)
	default:
	}
}

// twoNodes starts a NATS server storing in dir and two nodes on it.
func twoNodes(t *testing.T) (ns *server.Server, dir string, n1, n2 *node) {
	dir = t.TempDir()
	ns = startNATS(t, dir, 0)
	return ns, dir, startNode(t, ns.ClientURL(), "n1"), startNode(t, ns.ClientURL(), "n2")
}

// natsOutage stops the NATS server of a cluster until the nodes see it gone
// and returns a function that starts it again and waits for them.
func natsOutage(t *testing.T, ns *server.Server, dir string, nodes ...*node) (back func() *server.Server) {
	t.Helper()
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	waitNodes(t, false, nodes)
	return func() *server.Server {
		ns := startNATS(t, dir, port)
		waitNodes(t, true, nodes)
		return ns
	}
}

func waitNodes(t *testing.T, connected bool, nodes []*node) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for n.hook.Connected() != connected {
			if time.Now().After(deadline) {
				t.Fatalf("nodes not connected=%v to NATS", connected)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestSessionDuringNATSOutage: a persistent session that connects and
// subscribes while its node cannot reach NATS is claimed and recorded once
// NATS is back, so another node takes it over when this one dies.
func TestSessionDuringNATSOutage(t *testing.T) {
	ns, dir, n1, n2 := twoNodes(t)
	back := natsOutage(t, ns, dir, n1, n2)
	dev := connect(t, n1, "device-12", persistentSession)
	dev.subscribe(t, 1, "cmd/12/+")
	waitRecord(t, back().ClientURL(), "device-12", "cmd/12/+")
	_ = n1.hook.Stop() // node 1 dies
	pub := connect(t, n2, "pub")
	var want []string
	for i := range 5 {
		want = append(want, fmt.Sprintf("while-down-%d", i))
		pub.publish(t, &paho.Publish{Topic: "cmd/12/y", QoS: 1, Payload: []byte(want[i])})
	}
	second := connect(t, n2, "device-12", persistentSession)
	second.waitPayloads(t, 20*time.Second, want...)
}

// TestSessionMovedDuringNATSOutage: a client whose session was on node 2
// connects to node 1 while NATS is away; once NATS is back node 1 claims
// the client id and takes the session over from node 2, subscriptions
// included. A connection of the client still open on node 2 (one that
// went silent, say) is closed then: Session taken over.
func TestSessionMovedDuringNATSOutage(t *testing.T) {
	for _, leftOpen := range []bool{false, true} {
		t.Run(fmt.Sprint("old connection open=", leftOpen), func(t *testing.T) {
			ns, dir, n1, n2 := twoNodes(t)
			first := connect(t, n2, "device-13", persistentSession)
			first.subscribe(t, 1, "cmd/13/+")
			back := natsOutage(t, ns, dir, n1, n2)
			if !leftOpen {
				_ = first.Disconnect(&paho.Disconnect{})
			}
			second := connect(t, n1, "device-13", persistentSession)
			back()
			if leftOpen {
				// nats.go's watch alone noticed the restart after
				// 10 to 20 s.
				first.takenOver(t, 8*time.Second, "the old connection on node 2")
			}
			pub := connect(t, n2, "pub")
			deadline := time.Now().Add(20 * time.Second)
			for i := 0; len(second.messages()) == 0; i++ {
				if time.Now().After(deadline) {
					t.Fatal("the session's subscription never reached node 1")
				}
				pub.publish(t, &paho.Publish{Topic: "cmd/13/x", QoS: 1, Payload: []byte(fmt.Sprint("after-", i))})
				select {
				case <-second.seen:
				case <-time.After(200 * time.Millisecond):
				}
			}
			select {
			case d := <-second.disc:
				t.Fatalf("the new connection was closed: %#x", d.ReasonCode)
			default:
			}
		})
	}
}

// sessionsBucket opens the sessions bucket of the cluster on NATS at url,
// for 20 s (ctx).
func sessionsBucket(t *testing.T, url string) (ctx context.Context, kv jetstream.KeyValue) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if kv, err = js.KeyValue(ctx, "mqtt_sessions"); err != nil {
		t.Fatal(err)
	}
	return ctx, kv
}

// waitRecord waits until the sessions bucket records filter for client id.
func waitRecord(t *testing.T, url, id, filter string) {
	t.Helper()
	ctx, kv := sessionsBucket(t, url)
	key := base64.RawURLEncoding.EncodeToString([]byte(id)) + ".subs"
	for {
		if e, err := kv.Get(ctx, key); err == nil && strings.Contains(string(e.Value()), filter) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("no record of %s's subscription %s", id, filter)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRetainedAfterNATSRestart: a retained message set on one node right
// after NATS restarted reaches the other nodes at once, not when nats.go's
// watch of the bucket notices the restart (10 to 20 s).
func TestRetainedAfterNATSRestart(t *testing.T) {
	ns, dir, n1, n2 := twoNodes(t)
	p := connect(t, n2, "p")
	retainedOn := func(n *node, payload string, d time.Duration) bool {
		for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if pk, ok := n.b.Server().Topics.Retained.Get("state/a"); ok && string(pk.Payload) == payload {
				return true
			}
		}
		return false
	}
	p.publish(t, &paho.Publish{Topic: "state/a", QoS: 1, Retain: true, Payload: []byte("before")})
	if !retainedOn(n1, "before", 15*time.Second) {
		t.Fatal("retained message never reached node 1")
	}
	natsOutage(t, ns, dir, n1, n2)()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// 0x89 until the node's JetStream is back
		if r := p.publish(t, &paho.Publish{Topic: "state/a", QoS: 1, Retain: true, Payload: []byte("after")}); r.ReasonCode == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("retained publish refused after NATS came back")
		}
	}
	if !retainedOn(n1, "after", 8*time.Second) {
		t.Fatal("retained message set after the restart not on node 1 within 8 s")
	}
}

// TestSessionRecordForgotten: the subscriptions a persistent session
// records in the sessions bucket (for a node that takes it over) are
// deleted when the session expires.
func TestSessionRecordForgotten(t *testing.T) {
	nodes, ns := startCluster(t, 1)
	c := connect(t, nodes[0], "short-lived", func(cp *paho.Connect) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: paho.Uint32(1)}
	})
	c.subscribe(t, 1, "short/#")
	waitRecord(t, ns.ClientURL(), "short-lived", "short/#")
	ctx, kv := sessionsBucket(t, ns.ClientURL())
	key := base64.RawURLEncoding.EncodeToString([]byte("short-lived")) + ".subs"
	_ = c.Disconnect(&paho.Disconnect{})
	for {
		if _, err := kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
			return
		}
		if ctx.Err() != nil {
			t.Fatal("the expired session's record is still there")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
