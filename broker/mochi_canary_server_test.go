package broker

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Canaries for the connection and server workarounds (hook.go, broker.go,
// logging.go, flow.go, publishcheck.go); see mochi_canary_test.go and
// MOCHI.md.

// Canary for hook.go (willAllowed): mochi publishes a will to a topic its
// ACL refuses the client.
func TestMochiCanaryWillWithoutACL(t *testing.T) {
	refuse := &refuseHook{refuse: func(_ *mqtt.Client, topic string, write bool) bool {
		return write && topic == "canary/will-acl"
	}}
	_, addr := bareMochiWith(t, nil, refuse)
	sub := dialRaw(t, addr, 4, "canary-will-acl-sub", true, packets.Properties{})
	sub.subscribe("canary/will-acl", 0)
	w := dialWire(t, addr)
	w.v = 4
	w.packet(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "canary-will-acl",
			WillFlag: true, WillTopic: "canary/will-acl", WillPayload: []byte("gone")},
	})
	if ack := w.next(3 * time.Second); len(ack) != 4 || ack[3] != 0 {
		t.Fatalf("mochi now refuses the CONNECT of a will the ACL refuses (% x): review willAllowed in hook.go (MOCHI.md row 12)", ack)
	}
	w.conn.Close()
	if got := sub.publishes(time.Second); len(got) != 1 {
		t.Fatalf("mochi now withholds a will the ACL refuses (got %d): review willAllowed in hook.go (MOCHI.md row 12)", len(got))
	}
}

// firstReadConn notes whether a read deadline was set before the first
// Read.
type firstReadConn struct {
	net.Conn
	deadline atomic.Bool
	reading  chan struct{}
	once     sync.Once
}

func (c *firstReadConn) SetDeadline(t time.Time) error {
	c.deadline.Store(true)
	return c.Conn.SetDeadline(t)
}

func (c *firstReadConn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(true)
	return c.Conn.SetReadDeadline(t)
}

func (c *firstReadConn) Read(p []byte) (int, error) {
	c.once.Do(func() { close(c.reading) })
	return c.Conn.Read(p)
}

// Canary for broker.go (Serve's CONNECT deadline, New's limits): mochi
// waits for a CONNECT with no deadline, and its defaults are no packet
// size limit, 8192 pending writes per client, 24 h retained and message
// expiry and $SYS every second.
func TestMochiCanaryDefaults(t *testing.T) {
	caps := mqtt.NewDefaultServerCapabilities()
	if caps.MaximumPacketSize != 0 || caps.MaximumClientWritesPending != 8192 || caps.MaximumMessageExpiryInterval != 86400 {
		t.Fatalf("mochi's default capabilities changed (%+v): review the limits New sets (MOCHI.md row 13)", *caps)
	}
	srv, _ := bareMochi(t, nil)
	if srv.Options.SysTopicResendInterval != 1 {
		t.Fatalf("mochi's $SYS interval is now %d s: review New (MOCHI.md row 13)", srv.Options.SysTopicResendInterval)
	}
	server, client := net.Pipe()
	defer client.Close()
	conn := &firstReadConn{Conn: server, reading: make(chan struct{})}
	done := make(chan struct{})
	go func() { _ = srv.EstablishConnection("t", conn); close(done) }()
	select {
	case <-conn.reading:
	case <-time.After(3 * time.Second):
		t.Fatal("mochi does not read the connection")
	}
	if conn.deadline.Load() {
		t.Fatal("mochi now sets a deadline before it reads the CONNECT: review Serve's connect_timeout (MOCHI.md row 13)")
	}
	client.Close()
	<-done
}

// Canary for broker.go (Broker.shutdown): mochi's Close disconnects only the
// clients of listeners it has registered, not those handed to
// EstablishConnection under another name, and then waits until every
// client has left.
func TestMochiCanaryCloseOnlyRegisteredListeners(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	server, client := net.Pipe()
	defer client.Close()
	go func() { _ = srv.EstablishConnection("unregistered", server); server.Close() }()
	w := &wire{t: t, conn: client, r: bufio.NewReader(client), v: 4}
	w.packet(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "canary-close"},
	})
	if ack := w.next(3 * time.Second); len(ack) != 4 || ack[3] != 0 {
		t.Fatalf("CONNACK: % x", ack)
	}
	closed := make(chan struct{})
	go func() { _ = srv.Close(); close(closed) }()
	if w.closed(500 * time.Millisecond) {
		t.Fatal("mochi's Close now disconnects clients of unregistered listeners: review Broker.shutdown in broker.go (MOCHI.md row 14)")
	}
	select {
	case <-closed:
		t.Fatal("mochi's Close no longer waits for the clients it left connected (MOCHI.md row 14)")
	default:
	}
	client.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("mochi's Close still waits after the client left")
	}
}

// Canary for hook.go (dispatchHook.encode): mochi writes MQTT 5
// reason codes into MQTT 3 CONNACKs (0x80 for an empty client id without
// clean session, where MQTT 3.1.1 has return code 2), and sends MQTT 3
// clients a DISCONNECT, which MQTT 3.1.1 has only from the client.
func TestMochiCanaryMQTT3Codes(t *testing.T) {
	_, addr := bareMochi(t, nil)
	_, ack := dialRawConnect(t, addr, 4, packets.ConnectParams{Keepalive: 30}, packets.Properties{})
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != packets.ErrUnspecifiedError.Code {
		t.Fatalf("mochi now answers an MQTT 3 empty client id without clean session with %v %#x: review dispatchHook.encode in hook.go (MOCHI.md row 17)",
			ack.FixedHeader.Type, ack.ReasonCode)
	}
	first := dialWire(t, addr)
	first.connect(4, "canary-v3-takeover", 30, packets.Properties{})
	second := dialWire(t, addr)
	second.connect(4, "canary-v3-takeover", 30, packets.Properties{})
	if got := first.next(3 * time.Second); len(got) == 0 || got[0] != 0xe0 {
		t.Fatalf("mochi no longer sends a DISCONNECT to a taken-over MQTT 3 client (% x): review dispatchHook.encode in hook.go (MOCHI.md row 17)", got)
	}
}

// recordHandler keeps every log record.
type recordHandler struct {
	mu      *sync.Mutex
	records *[]slog.Record
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recordHandler) WithGroup(string) slog.Handler            { return h }

func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.records = append(*h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

// Canary for logging.go: mochi logs the whole packet a client's protocol
// error came with, the password of a second CONNECT included.
func TestMochiCanaryLogsPackets(t *testing.T) {
	var (
		mu      sync.Mutex
		records []slog.Record
	)
	_, addr := bareMochi(t, func(o *mqtt.Options) {
		o.Logger = slog.New(recordHandler{mu: &mu, records: &records})
	})
	w := dialWire(t, addr)
	w.connect(4, "canary-log", 30, packets.Properties{})
	w.packet(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "canary-log",
			UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("canary-secret")},
	})
	logged := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range records {
			found := false
			r.Attrs(func(a slog.Attr) bool {
				pk, ok := a.Value.Any().(packets.Packet)
				found = ok && string(pk.Connect.Password) == "canary-secret"
				return !found
			})
			if found {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(3 * time.Second)
	for !logged() {
		if time.Now().After(deadline) {
			t.Fatal("mochi no longer logs a second CONNECT's password: review mochiLogHandler in logging.go (MOCHI.md row 18)")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Canary for flow.go (OnConnect, no outgoing aliases): mochi replaces the
// topic of a repeated topic by an alias for a client that accepts aliases.
func TestMochiCanaryOutgoingTopicAliases(t *testing.T) {
	srv, addr := bareMochi(t, nil)
	c := dialRaw(t, addr, 5, "canary-alias", true, packets.Properties{TopicAliasMaximum: 5})
	c.subscribe("canary/alias", 0)
	for range 2 {
		if err := srv.Publish("canary/alias", []byte("x"), false, 0); err != nil {
			t.Fatal(err)
		}
	}
	got := c.publishes(quiet)
	if len(got) != 2 {
		t.Fatalf("got %d of 2", len(got))
	}
	if got[1].TopicName != "" || got[1].Properties.TopicAlias == 0 {
		t.Fatalf("mochi no longer names a repeated topic by alias (%q, alias %d): review the outgoing aliases in flow.go (MOCHI.md row 19)",
			got[1].TopicName, got[1].Properties.TopicAlias)
	}
}

// Canary for hook.go (OnConnect): mochi accepts a network client with the
// inline client's id.
func TestMochiCanaryInlineClientID(t *testing.T) {
	_, addr := bareMochi(t, nil)
	if _, ack := dialRawConnect(t, addr, 4, packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: mqtt.InlineClientId}, packets.Properties{}); ack.ReasonCode != 0 {
		t.Fatalf("mochi now refuses the client id %q (%#x): review OnConnect in hook.go (MOCHI.md row 20)", mqtt.InlineClientId, ack.ReasonCode)
	}
}

// Canary for publishcheck.go: mochi closes the connection of an MQTT 3
// client whose QoS 1 publish the ACL refuses.
func TestMochiCanaryMQTT3RefusedPublishCloses(t *testing.T) {
	refuse := &refuseHook{refuse: func(_ *mqtt.Client, topic string, write bool) bool {
		return write && topic == "canary/denied"
	}}
	_, addr := bareMochiWith(t, nil, refuse)
	w := dialWire(t, addr)
	w.connect(4, "canary-denied", 30, packets.Properties{})
	w.packet(publishPk(1, 1, "canary/denied", "x"))
	if !w.closed(3 * time.Second) {
		t.Fatal("mochi now keeps an MQTT 3 connection whose QoS 1 publish is refused: review publishcheck.go (MOCHI.md row 23)")
	}
}

// Canary for broker.go (the doors are no mochi listeners): mochi's
// Clients.GetByListener takes the client list's read lock and then, in Len,
// takes it again. A Delete (a client leaving) that waits for the write lock
// between the two blocks the second, and from then on every user of the
// client list. mochi's Close calls GetByListener for every registered
// listener: a canary here once hung CI for 13 minutes so.
func TestMochiCanaryGetByListenerDeadlocks(t *testing.T) {
	clients := mqtt.NewClients()
	cl := &mqtt.Client{ID: "canary"}
	var reads atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	// loop runs f until stop is closed.
	loop := func(f func()) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			f()
		}
	}
	go loop(func() {
		clients.GetByListener("t")
		reads.Add(1)
	})
	go loop(func() {
		clients.Add(cl)
		clients.Delete(cl.ID)
	})
	for last, deadline := int64(-1), time.Now().Add(10*time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		n := reads.Load()
		if n != last {
			last = n
			continue
		}
		// No progress: deadlocked if the list cannot even be read.
		read := make(chan struct{})
		go func() { clients.Len(); close(read) }()
		select {
		case <-read:
		case <-time.After(time.Second):
			return // still deadlocks (these goroutines stay blocked)
		}
	}
	t.Fatal("mochi's Clients.GetByListener no longer deadlocks with a concurrent Delete: the doors could be mochi listeners again (MOCHI.md row 35)")
}
