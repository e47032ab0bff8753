package broker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// passwordPolicy lets in "user" with password "secret" and refuses
// everyone else; it denies publishing to "denied/..." and subscribing to
// "denied/#".
type passwordPolicy struct{}

func (passwordPolicy) Authenticate(c *Client, password []byte) error {
	if c.Username == "user" && string(password) == "secret" {
		return nil
	}
	return ErrNotAuthorized
}

func (passwordPolicy) Authorize(_ *Client, topic string, access Access) bool {
	return !(access == AccessPublish && strings.HasPrefix(topic, "denied/")) &&
		!(access == AccessSubscribe && topic == "denied/#")
}

// gather returns the value of one series of a fresh pedantic registry
// holding c (what Caddy gives every config), or -1 when it is absent.
func gather(t testing.TB, c prometheus.Collector, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return metricValue(m)
		}
	}
	return -1
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

func pahoLoginWith(t testing.TB, addr string, mod func(*paho.Connect)) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{KeepAlive: 30}
	mod(cp)
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
	} else {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca, err
}

func pahoLogin(t testing.TB, addr, id, user, password string, onPub func(paho.PublishReceived)) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: conn}
	if onPub != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onPub(pr); return true, nil },
		}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(password), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
	}
	return c, ca, err
}

// TestMetricsCountPerDoor: two named doors; a scripted workload gives
// exact values per door, and a collector on a new registry (a reload)
// continues from the same counts.
func TestMetricsCountPerDoor(t *testing.T) {
	var logs syncBuf
	b := newBroker(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, passwordPolicy{})
	addrA := serveDoor(t, b, ConnInfo{Door: DoorTCP, Name: "plant-a"})
	addrB := serveDoor(t, b, ConnInfo{Door: DoorTCP})
	col := NewCollector(func() *Broker { return b })

	var got atomic.Int64
	sub, _, err := pahoLogin(t, addrA, "sub", "user", "secret", func(paho.PublishReceived) { got.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "m/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub, _, err := pahoLogin(t, addrB, "pub", "user", "secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "m/x", QoS: 1, Payload: []byte(fmt.Sprintf("%04d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ca, err := pahoLogin(t, addrB, "intruder", "user", "wrong", nil); err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("bad password: connack %+v, err %v", ca, err)
	}
	waitFor(t, func() bool { return got.Load() == 10 })

	want := []struct {
		name   string
		labels map[string]string
		v      float64
	}{
		{"caddy_mqtt_clients_connected", map[string]string{"door": "plant-a"}, 1},
		{"caddy_mqtt_clients_connected", map[string]string{"door": "tcp"}, 1},
		{"caddy_mqtt_connections_accepted_total", map[string]string{"door": "tcp"}, 1},
		{"caddy_mqtt_connections_refused_total", map[string]string{"door": "tcp", "reason": "auth"}, 1},
		{"caddy_mqtt_connections_refused_total", map[string]string{"door": "plant-a", "reason": "auth"}, 0},
		{"caddy_mqtt_messages_received_total", map[string]string{"door": "tcp", "qos": "1"}, 10},
		{"caddy_mqtt_messages_sent_total", map[string]string{"door": "plant-a", "qos": "1"}, 10},
		{"caddy_mqtt_payload_received_bytes_total", map[string]string{"door": "tcp", "qos": "1"}, 40},
		{"caddy_mqtt_subscriptions", map[string]string{"door": "plant-a"}, 1},
		{"caddy_mqtt_auth_duration_seconds", map[string]string{"door": "tcp"}, 2},
	}
	check := func() {
		t.Helper()
		for _, w := range want {
			if v := gather(t, col, w.name, w.labels); v != w.v {
				t.Errorf("%s%v = %v, want %v", w.name, w.labels, v, w.v)
			}
		}
	}
	check()
	if v := gather(t, col, "caddy_mqtt_received_bytes_total", map[string]string{"door": "tcp"}); v < 10*(2+3+2+4) {
		t.Errorf("received bytes %v: fewer than the publishes' own", v)
	}

	// An ACL denial is a WARN line naming the topic.
	if pr, err := pub.Publish(ctx, &paho.Publish{Topic: "denied/x", QoS: 1, Payload: []byte("p")}); err == nil && pr.ReasonCode < 0x80 {
		t.Fatalf("publish to denied/x: %+v", pr)
	}
	waitFor(t, func() bool {
		return strings.Contains(logs.String(), `"level":"WARN","msg":"mqtt publish denied by acl","client":"pub","username":"user","door":"tcp"`) &&
			strings.Contains(logs.String(), `"topic":"denied/x"`)
	})
	if sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "denied/#", QoS: 1}}}); sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
		t.Fatalf("subscribe to denied/#: %+v %v", sa, err)
	}
	waitFor(t, func() bool {
		return strings.Contains(logs.String(), `"level":"WARN","msg":"mqtt subscribe denied by acl","client":"sub","username":"user","door":"plant-a"`) &&
			strings.Contains(logs.String(), `"topic":"denied/#"`)
	})
	// It was received all the same.
	for i := range want {
		switch want[i].name {
		case "caddy_mqtt_messages_received_total":
			want[i].v = 11
		case "caddy_mqtt_payload_received_bytes_total":
			want[i].v = 41
		}
	}

	_ = pub.Disconnect(&paho.Disconnect{})
	waitFor(t, func() bool {
		return gather(t, col, "caddy_mqtt_disconnects_total", map[string]string{"door": "tcp", "reason": "normal"}) == 1
	})
	// A new collector on a new registry (what a reload does) reads the
	// same counters.
	col = NewCollector(func() *Broker { return b })
	want = want[2:] // connected: checked below
	check()
	if v := gather(t, col, "caddy_mqtt_clients_connected", map[string]string{"door": "tcp"}); v != 0 {
		t.Errorf("connected on tcp after disconnect = %v", v)
	}

	// One line per connect and disconnect, with the fields, no password.
	waitFor(t, func() bool { return strings.Contains(logs.String(), `"msg":"mqtt client disconnected"`) })
	for _, want := range []string{
		`"msg":"mqtt client connected","client":"pub","username":"user","door":"tcp","remote":"127.0.0.1:`,
		`"protocol":5,"session_present":false`,
		`"msg":"mqtt client disconnected","client":"pub","username":"user","door":"tcp"`,
		`"reason":"normal"`,
		`"level":"WARN","msg":"mqtt connection refused","client":"intruder","username":"user"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s\n%s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "secret") || strings.Contains(logs.String(), "wrong") {
		t.Errorf("a password is in the log:\n%s", logs.String())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSamplerBoundsWarnings: a flood of bad logins gives the first ten
// lines of a second and then one in a hundred.
func TestSamplerBoundsWarnings(t *testing.T) {
	s := newSampler()
	now := time.Unix(1000, 0)
	n := 0
	for range 1010 {
		if s.allow("refused", now) {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("1010 events in one second: %d logged, want 20", n)
	}
	if !s.allow("refused", now.Add(time.Second)) {
		t.Fatal("the next second starts afresh")
	}
}

// BenchmarkMetricsOverhead: messages from a paho.golang publisher to a
// paho.golang subscriber over loopback TCP through two brokers side by
// side, one with the metrics (hook and byte counting) and one without
// (Options.NoMetrics). Batches alternate between them, in alternating
// order, so that the load of a shared machine hits both alike; it reports
// each one's rate and the difference in percent (overhead_%).
//
//	go test -run '^$' -bench MetricsOverhead -benchtime 20000x ./broker/
func BenchmarkMetricsOverhead(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos=%d", qos), func(b *testing.B) {
			type side struct {
				pub      *paho.Client
				received atomic.Int64
				sent     int64
				took     time.Duration
			}
			setup := func(on bool) *side {
				s := new(side)
				br := newBroker(b, Options{NoMetrics: !on, MaxQueuedMessages: 30000, Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
				addr := serveDoor(b, br, ConnInfo{Door: DoorTCP})
				pahoSubscriber(b, addr, "bench-sub", "bench/t", func([]byte) { s.received.Add(1) })
				pub, _, err := pahoLogin(b, addr, "bench-pub", "", "", nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = pub.Disconnect(&paho.Disconnect{}) })
				s.pub = pub
				return s
			}
			off, on := setup(false), setup(true)
			payload := bytes.Repeat([]byte("x"), 64)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// A batch stays within the subscriber's write buffer, so QoS 0
			// loses nothing.
			const batch = 50
			run := func(s *side, n int64) {
				start := time.Now()
				for range n {
					if _, err := s.pub.Publish(ctx, &paho.Publish{Topic: "bench/t", QoS: qos, Payload: payload}); err != nil {
						b.Fatal(err)
					}
				}
				s.sent += n
				for deadline := time.Now().Add(time.Minute); s.received.Load() < s.sent; time.Sleep(20 * time.Microsecond) {
					if time.Now().After(deadline) {
						b.Fatalf("received %d of %d", s.received.Load(), s.sent)
					}
				}
				s.took += time.Since(start)
			}
			b.ResetTimer()
			for done, round := int64(0), 0; done < int64(b.N); round++ {
				n := min(batch, int64(b.N)-done)
				if round%2 == 0 {
					run(off, n)
					run(on, n)
				} else {
					run(on, n)
					run(off, n)
				}
				done += n
			}
			b.ReportMetric(float64(off.sent)/off.took.Seconds(), "msg/s-off")
			b.ReportMetric(float64(on.sent)/on.took.Seconds(), "msg/s-on")
			b.ReportMetric((on.took.Seconds()/off.took.Seconds()-1)*100, "overhead_%")
		})
	}
}

// BenchmarkMetricsPerMessage: what the metrics add to one message that is
// received and sent once: the hook calls mochi makes (Provides included)
// and the byte counting of its read and write.
//
//	go test -run '^$' -bench MetricsPerMessage ./broker/
func BenchmarkMetricsPerMessage(b *testing.B) {
	br := newBroker(b, Options{Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	cc := &clientConn{Conn: a, broker: br}
	cc.m.door = br.metrics.door("tcp")
	counted := countingConn{Conn: nopConn{a}, s: cc.m.door}
	cl := br.srv.NewClient(cc, "tcp", "bench", false)
	h := &metricsHook{b: br}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Payload: make([]byte, 64)}
	buf := make([]byte, 80)
	for b.Loop() {
		h.read(cl, &pk) // through readHook (read.go)
		if h.Provides(mqtt.OnPacketSent) {
			h.OnPacketSent(cl, pk, nil)
		}
		_, _ = counted.Read(buf)
		_, _ = counted.Write(buf)
	}
}

// nopConn reads and writes nothing, so only the counting is measured.
type nopConn struct{ net.Conn }

func (nopConn) Read(p []byte) (int, error)  { return len(p), nil }
func (nopConn) Write(p []byte) (int, error) { return len(p), nil }

// TestTakeoverAndKickCounted: a second connection with a client id closes
// the first (reason takeover, counted on the first one's door); a kick is
// reason admin, and the client's MQTT 5 DISCONNECT says 0x98.
func TestTakeoverAndKickCounted(t *testing.T) {
	b := newBroker(t, Options{Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
	addrA := serveDoor(t, b, ConnInfo{Door: DoorTCP, Name: "a"})
	addrB := serveDoor(t, b, ConnInfo{Door: DoorTCP, Name: "b"})
	col := NewCollector(func() *Broker { return b })
	if _, _, err := pahoLoginWith(t, addrA, func(cp *paho.Connect) { cp.ClientID, cp.CleanStart = "twin", true }); err != nil {
		t.Fatal(err)
	}
	disc := make(chan *paho.Disconnect, 1)
	conn, err := net.Dial("tcp", addrB)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { disc <- d }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "twin", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return gather(t, col, "caddy_mqtt_session_takeovers_total", map[string]string{"door": "a"}) == 1 &&
			gather(t, col, "caddy_mqtt_disconnects_total", map[string]string{"door": "a", "reason": "takeover"}) == 1 &&
			gather(t, col, "caddy_mqtt_clients_connected", map[string]string{"door": "a"}) == 0 &&
			gather(t, col, "caddy_mqtt_clients_connected", map[string]string{"door": "b"}) == 1
	})
	if err := b.Kick(ctx, "twin", false); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-disc:
		if d.ReasonCode != 0x98 {
			t.Fatalf("kick: reason %#x", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DISCONNECT")
	}
	waitFor(t, func() bool {
		return gather(t, col, "caddy_mqtt_disconnects_total", map[string]string{"door": "b", "reason": "admin"}) == 1 &&
			gather(t, col, "caddy_mqtt_clients_connected", map[string]string{"door": "b"}) == 0
	})
}

// TestHeldMessageGauges: a connected client that does not acknowledge has
// max_inflight_messages in flight and the rest queued; once it is gone, its
// session holds them all as queued. The admin API says the same.
func TestHeldMessageGauges(t *testing.T) {
	b, addr := newDoorBroker(t, DoorLimits{MaxInflightMessages: 2, MaxQueuedMessages: 10})
	col := NewCollector(func() *Broker { return b })
	sub := dialRaw(t, addr, 4, "held", false, packets.Properties{})
	sub.subscribe("held/t", 1)
	publishN(t, b, "held/t", 1, 0, 4) // never acknowledged
	gauges := func(inflight, queued float64) bool {
		door := map[string]string{"door": "tcp"}
		ci, err := b.Client("held")
		return err == nil && ci.Inflight == int(inflight) && ci.Queued == int(queued) &&
			gather(t, col, "caddy_mqtt_inflight_messages", door) == inflight &&
			gather(t, col, "caddy_mqtt_queued_messages", door) == queued &&
			gather(t, col, "caddy_mqtt_subscriptions", door) == 1
	}
	waitFor(t, func() bool { return gauges(2, 3) })
	sub.conn.Close()
	waitFor(t, func() bool { return gauges(0, 5) })
}

// holdTakeoverHook holds the goroutine that took a client id over right
// after the old client's DISCONNECT (0x8E) is written, before mochi stops
// the old client, until the old connection's read loop has stopped it
// itself: the order in which a busy machine ran them now and then.
type holdTakeoverHook struct {
	mqtt.HookBase
}

func (h *holdTakeoverHook) ID() string           { return "test-hold-takeover" }
func (h *holdTakeoverHook) Provides(b byte) bool { return b == mqtt.OnPacketSent }

func (h *holdTakeoverHook) OnPacketSent(old *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrSessionTakenOver.Code {
		return
	}
	for deadline := time.Now().Add(5 * time.Second); old.StopCause() == nil && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// TestTakeoverCountedWhenClientClosesFirst: a client whose client id is
// taken over, and which closes its side as soon as it reads the DISCONNECT,
// ends its session's read loop with EOF before mochi records the takeover
// as the cause (MOCHI.md row 36); the session still counts as taken over.
// It failed so about once in 200 runs of TestTakeoverAndKickCounted on a
// loaded machine; here the hook makes that order certain.
func TestTakeoverCountedWhenClientClosesFirst(t *testing.T) {
	b := newBroker(t, Options{Logger: slog.New(slog.DiscardHandler), Hooks: []mqtt.Hook{new(holdTakeoverHook)}}, AnonymousPolicy{Allow: true})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP, Name: "a"})
	col := NewCollector(func() *Broker { return b })
	old := dialRaw(t, addr, 5, "twin", true, packets.Properties{})
	go func() { // closes on reading the DISCONNECT, as paho does
		_ = old.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = old.conn.Read(make([]byte, 64))
		old.conn.Close()
	}()
	dialRaw(t, addr, 5, "twin", true, packets.Properties{})
	waitFor(t, func() bool {
		return gather(t, col, "caddy_mqtt_disconnects_total", map[string]string{"door": "a", "reason": "takeover"}) == 1 &&
			gather(t, col, "caddy_mqtt_session_takeovers_total", map[string]string{"door": "a"}) == 1
	})
	if n := gather(t, col, "caddy_mqtt_disconnects_total", map[string]string{"door": "a", "reason": "eof"}); n != 0 {
		t.Fatalf("%v disconnects counted as eof", n)
	}
}
