package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// natsServer is a real nats-server process (built from the module proxy by
// .ci/run; NATS_SERVER_BIN or PATH) with JetStream, on a loopback port.
type natsServer struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

func startNATSServer(t testing.TB) *natsServer {
	t.Helper()
	bin := os.Getenv("NATS_SERVER_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("nats-server"); err != nil {
			t.Fatal("nats-server not found: .ci/run installs it (go install github.com/nats-io/nats-server/v2@v2.15.3); or set NATS_SERVER_BIN")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &natsServer{t: t, bin: bin, port: port, dir: t.TempDir(), log: new(syncBuffer)}
	n.start()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("nats-server log:\n%s", tail(n.log.String(), 30))
		}
	})
	return n
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *natsServer) start() {
	n.t.Helper()
	n.cmd = exec.Command(n.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", n.dir)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(n.cmd, n.done)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(n.port)); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server did not listen:\n%s", n.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *natsServer) stop() {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done:
	default:
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	}
	n.cmd = nil
}

// startClusterNodes runs three Caddy processes, each with every door,
// joined through ns.
func startClusterNodes(t *testing.T, ns *natsServer) []*Caddy {
	t.Helper()
	var nodes []*Caddy
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, startCaddy(t, fmt.Sprintf("cluster nats {\n\t\t\turl %s\n\t\t\tnode node%d\n\t\t}", ns.url(), i)))
	}
	return nodes
}

// TestClusterEveryDoorEveryNode: a subscriber on every door of every node
// receives, exactly once, a publish from every door of every node (node 1
// over WSS gets node 2's TCP and node 3's TLS publishes among them).
func TestClusterEveryDoorEveryNode(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	var subs []*V5
	var names []string
	for i, c := range nodes {
		for _, door := range Doors {
			names = append(names, fmt.Sprintf("sub-n%d-%s", i+1, door))
			s := c.ConnectV5(t, door, names[len(names)-1])
			s.Subscribe(t, "cluster/#", 1)
			subs = append(subs, s)
		}
	}
	want := map[string]bool{}
	for i, c := range nodes {
		for _, door := range Doors {
			p := c.ConnectV5(t, door, fmt.Sprintf("pub-n%d-%s", i+1, door))
			topic := fmt.Sprintf("cluster/n%d/%s", i+1, door)
			p.Publish(t, topic, 1, false, []byte(topic))
			want[topic] = true
		}
	}
	for i, s := range subs {
		name := names[i]
		got := map[string]int{}
		for range want {
			select {
			case m := <-s.Msgs:
				got[m.Topic]++
				if string(m.Payload) != m.Topic {
					t.Errorf("%s: payload %q on %s", name, m.Payload, m.Topic)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("%s: timed out after %d of %d: %v", name, len(got), len(want), got)
			}
		}
		for topic := range want {
			if got[topic] != 1 {
				t.Errorf("%s: %s received %d times", name, topic, got[topic])
			}
		}
		select {
		case m := <-s.Msgs:
			t.Errorf("%s: extra message %s", name, m.Topic)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestClusterRetained: retained on node 1, seen by a new subscriber on node
// 3; cleared on node 2, gone on every node.
func TestClusterRetained(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	nodes[0].ConnectV5(t, "tcp", "r-pub1").Publish(t, "state/lamp", 1, true, []byte("on"))
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		s := nodes[2].ConnectV5(t, "wss", fmt.Sprintf("r-sub3-%d", i))
		s.Subscribe(t, "state/#", 1)
		select {
		case m := <-s.Msgs:
			if string(m.Payload) != "on" || !m.Retain {
				t.Fatalf("retained on node 3: %q retain=%v", m.Payload, m.Retain)
			}
		case <-time.After(500 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("retained message of node 1 never seen on node 3")
			}
			s.Client.Disconnect(&paho.Disconnect{})
			continue
		}
		break
	}
	nodes[1].ConnectV5(t, "tls", "r-pub2").Publish(t, "state/lamp", 1, true, nil)
	for n, c := range nodes {
		deadline := time.Now().Add(15 * time.Second)
		for i := 0; ; i++ {
			s := c.ConnectV5(t, "ws", fmt.Sprintf("r-check%d-%d", n, i))
			s.Subscribe(t, "state/#", 1)
			select {
			case <-s.Msgs:
				if time.Now().After(deadline) {
					t.Fatalf("node %d still has the cleared retained message", n+1)
				}
				s.Client.Disconnect(&paho.Disconnect{})
				time.Sleep(200 * time.Millisecond)
				continue
			case <-time.After(500 * time.Millisecond):
			}
			break
		}
	}
}

// TestClusterSharedSubscription: one member of a shared subscription per
// node; each message goes to exactly one of them.
func TestClusterSharedSubscription(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	var members []*V5
	for i, c := range nodes {
		m := c.ConnectV5(t, Doors[i%len(Doors)], fmt.Sprintf("member%d", i))
		m.Subscribe(t, "$share/workers/jobs/+", 1)
		members = append(members, m)
	}
	const total = 300
	var pubs []*V5
	for i, c := range nodes {
		pubs = append(pubs, c.ConnectV5(t, "tcp", fmt.Sprintf("jobpub%d", i)))
	}
	for i := range total {
		pubs[i%3].Publish(t, fmt.Sprintf("jobs/%d", i%5), 1, false, []byte(strconv.Itoa(i)))
	}
	seen := map[string]int{}
	perMember := make([]int, len(members))
	deadline := time.After(20 * time.Second)
	for n := 0; n < total; {
		select {
		case m := <-members[0].Msgs:
			seen[string(m.Payload)]++
			perMember[0]++
		case m := <-members[1].Msgs:
			seen[string(m.Payload)]++
			perMember[1]++
		case m := <-members[2].Msgs:
			seen[string(m.Payload)]++
			perMember[2]++
		case <-deadline:
			t.Fatalf("group received %d of %d (%v)", n, total, perMember)
		}
		n++
	}
	time.Sleep(500 * time.Millisecond)
	for i, m := range members {
		perMember[i] += len(m.Msgs)
	}
	if len(seen) != total || perMember[0]+perMember[1]+perMember[2] != total {
		t.Fatalf("each message once: %d distinct, per member %v", len(seen), perMember)
	}
	for i, n := range perMember {
		if n == 0 {
			t.Errorf("member on node %d got nothing: %v", i+1, perMember)
		}
	}
}

// TestClusterNATSRestart: with NATS stopped, local traffic goes on and a
// QoS 1 publish is refused with 0x89; when it is back, cross-node delivery
// resumes without restarting Caddy.
func TestClusterNATSRestart(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	sub := nodes[0].ConnectV5(t, "wss", "nr-sub")
	sub.Subscribe(t, "nr/#", 1)
	remote := nodes[1].ConnectV5(t, "tcp", "nr-remote")
	remote.Publish(t, "nr/before", 1, false, []byte("x"))
	expect := func(topic string) {
		t.Helper()
		select {
		case m := <-sub.Msgs:
			if m.Topic != topic {
				t.Fatalf("got %s, want %s", m.Topic, topic)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s not received", topic)
		}
	}
	expect("nr/before")

	ns.stop()
	local := nodes[0].ConnectV5(t, "tcp", "nr-local")
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := local.Client.Publish(ctx, &paho.Publish{Topic: "nr/q1", QoS: 1, Payload: []byte("x")})
		cancel()
		if err == nil && r.ReasonCode == 0 {
			expect("nr/q1") // NATS loss not noticed yet: delivered locally
		}
		if r != nil && r.ReasonCode == 0x89 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QoS 1 publish with NATS down: %v %+v, want 0x89", err, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	local.Publish(t, "nr/local", 0, false, []byte("x"))
	expect("nr/local")

	ns.start()
	deadline = time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := remote.Client.Publish(ctx, &paho.Publish{Topic: "nr/after", QoS: 1, Payload: []byte("x")})
		cancel()
		if err == nil && r.ReasonCode == 0 {
			select {
			case m := <-sub.Msgs:
				if m.Topic == "nr/after" {
					return
				}
			case <-time.After(time.Second):
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("cross-node delivery did not resume after NATS came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterSharedCertificateStorage: nodes that share one certmagic
// storage (here Caddy's file_system module on a shared directory, as a
// shared volume would be) use one CA and one set of certificates: a client
// trusting the shared root connects to the TLS door of either node.
func TestClusterSharedCertificateStorage(t *testing.T) {
	ns := startNATSServer(t)
	shared := t.TempDir()
	root := filepath.Join(shared, "pki", "authorities", "local", "root.crt")
	tmpl := derive(baseCaddyfile, "\tskip_install_trust\n", "\tskip_install_trust\n\tstorage file_system "+shared+"\n")
	var nodes []*Caddy
	for i := 1; i <= 2; i++ {
		ports := freePorts(t)
		conf := render(t, tmpl, CaddyConfig{Ports: ports,
			Extra: fmt.Sprintf("cluster nats {\n\t\t\turl %s\n\t\t\tnode node%d\n\t\t}", ns.url(), i)})
		nodes = append(nodes, startCaddyConfig(t, conf, ports, ports.TCP, ports.TLS))
		// The first node creates the CA; later ones find it in storage.
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := os.Stat(root); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no shared CA root")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	pem, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for i, c := range nodes {
		deadline := time.Now().Add(20 * time.Second)
		for {
			conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TLS),
				&tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"mqtt"}})
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: TLS door with the shared root: %v", i+1, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if _, err := os.Stat(filepath.Join(nodes[1].dir, "data", "caddy", "pki")); err == nil {
		t.Fatal("node 2 made a CA of its own in its data directory")
	}
}

// TestClusterTakeover: the same client id connecting on node 2 closes its
// connection on node 1 with 0x8E; the new one stays and receives.
func TestClusterTakeover(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	old := nodes[0].ConnectV5(t, "wss", "roaming")
	old.Subscribe(t, "roam/#", 1)
	cur := nodes[1].ConnectV5(t, "tcp", "roaming")
	select {
	case d := <-old.Disconnect:
		if d.ReasonCode != 0x8E {
			t.Fatalf("node 1 connection closed with %#x, want 0x8E", d.ReasonCode)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("node 1 connection not taken over")
	}
	cur.Subscribe(t, "roam/#", 1)
	nodes[2].ConnectV5(t, "tls", "roam-pub").Publish(t, "roam/x", 1, false, []byte("x"))
	select {
	case m := <-cur.Msgs:
		if m.Topic != "roam/x" {
			t.Fatalf("got %s", m.Topic)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the new connection receives nothing")
	}
	select {
	case d := <-cur.Disconnect:
		t.Fatalf("the new connection was closed: %#x", d.ReasonCode)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestClusterQoS1NodeKilled: 10,000 QoS 1 messages from node 2 to a
// subscriber on node 1; node 2 is killed (-9) midway and restarted, the
// publisher reconnects and goes on. Every message node 2 acknowledged
// reaches the subscriber (at least once).
func TestClusterQoS1NodeKilled(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	sub := nodes[0].ConnectV5(t, "wss", "k-sub")
	sub.Subscribe(t, "stream/#", 1)
	got := make(map[string]int)
	var gotMu sync.Mutex
	recvDone := make(chan struct{})
	stopRecv := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			select {
			case m := <-sub.Msgs:
				gotMu.Lock()
				got[string(m.Payload)]++
				gotMu.Unlock()
			case <-stopRecv:
				return
			}
		}
	}()
	const total = 10000
	acked := make([]bool, total)
	pub := nodes[1].ConnectV5(t, "tcp", "k-pub")
	killed := false
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; i < total; {
		if time.Now().After(deadline) {
			t.Fatalf("publishing took too long: at %d", i)
		}
		if i == total/2 && !killed {
			// Kill with messages in flight: from another goroutine, while
			// the next publish waits for its PUBACK.
			killed = true
			pid := nodes[1].Pid() // read here: Restart replaces the process
			go func() {
				time.Sleep(5 * time.Millisecond)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := pub.Client.Publish(ctx, &paho.Publish{Topic: "stream/k", QoS: 1, Payload: []byte(strconv.Itoa(i))})
		cancel()
		if err == nil && r.ReasonCode < 0x80 {
			acked[i] = true
			i++
			continue
		}
		if !killed {
			t.Fatalf("publish %d: %v %+v", i, err, r)
		}
		// Node 2 is gone: restart it and publish again from i.
		select {
		case <-nodes[1].done:
		case <-time.After(10 * time.Second):
			t.Fatal("node 2 not dead after SIGKILL")
		}
		nodes[1].Restart()
		pub = nodes[1].ConnectV5(t, "tcp", "k-pub")
	}
	if !strings.Contains(nodes[1].Log(), "---- restart ----") {
		t.Fatal("node 2 was never killed and restarted")
	}
	waitUntil := time.Now().Add(60 * time.Second)
	for {
		gotMu.Lock()
		missing := 0
		first := -1
		for i := range total {
			if acked[i] && got[strconv.Itoa(i)] == 0 {
				missing++
				if first < 0 {
					first = i
				}
			}
		}
		gotMu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("%d acknowledged messages never delivered (first: %d)", missing, first)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stopRecv)
	<-recvDone
}

// startDurableClusterNodes runs three Caddy processes with bolt storage
// (persistent sessions survive a kill) joined through ns.
func startDurableClusterNodes(t *testing.T, ns *natsServer) []*Caddy {
	t.Helper()
	var nodes []*Caddy
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, startCaddy(t, fmt.Sprintf("storage bolt\n\tmax_queued_messages 25000\n\tcluster nats {\n\t\t\turl %s\n\t\t\tnode node%d\n\t\t}", ns.url(), i)))
	}
	return nodes
}

// killNode kills c with SIGKILL and waits until it is gone.
func killNode(t *testing.T, c *Caddy) {
	t.Helper()
	_ = syscall.Kill(c.Pid(), syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("node not dead after SIGKILL")
	}
}

// counter counts payloads received by one subscriber, across reconnects.
type counter struct {
	mu  sync.Mutex
	got map[string]int
}

func newCounter() *counter { return &counter{got: map[string]int{}} }

func (c *counter) add(p string) {
	c.mu.Lock()
	c.got[p]++
	c.mu.Unlock()
}

// missing is how many of the first n payloads (0..n-1) never arrived.
func (c *counter) missing(n int) (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	miss, first := 0, -1
	for i := range n {
		if c.got[strconv.Itoa(i)] == 0 {
			miss++
			if first < 0 {
				first = i
			}
		}
	}
	return miss, first
}

func (c *counter) waitAll(t *testing.T, who string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		miss, first := c.missing(n)
		if miss == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d acknowledged messages never delivered (first: %d)", who, miss, first)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// drains counts the messages of a test's subscribers, across their
// reconnects, until the test ends.
type drains struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func newDrains(t *testing.T) *drains {
	d := &drains{stop: make(chan struct{})}
	t.Cleanup(func() { close(d.stop); d.wg.Wait() })
	return d
}

// v5 counts v's messages into c.
func (d *drains) v5(v *V5, c *counter) {
	drainInto(d, v.Msgs, c, func(m *paho.Publish) string { return string(m.Payload) })
}

// v3 counts v's messages into c.
func (d *drains) v3(v *V3, c *counter) {
	drainInto(d, v.Msgs, c, func(m pahov3.Message) string { return string(m.Payload()) })
}

func drainInto[M any](d *drains, msgs <-chan M, c *counter, payload func(M) string) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			select {
			case m := <-msgs:
				c.add(payload(m))
			case <-d.stop:
				return
			}
		}
	}()
}

// TestClusterQoS1SubscriberNodeKilled: persistent QoS 1 subscribers (MQTT 5
// and MQTT 3.1.1) on node 2; 10,000 QoS 1 messages published on node 1;
// node 2 is killed (-9) midway, stays down while the rest is published and
// acknowledged, and is restarted. The subscribers reconnect to node 2 and
// get every message at least once: what was published while node 2 was
// down waited in the JetStream stream for node 2's durable consumer.
func TestClusterQoS1SubscriberNodeKilled(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startDurableClusterNodes(t, ns)
	c5 := newCounter()
	c3 := newCounter()
	drain := newDrains(t)
	sub5 := persistentV5(nodes[1], t, "tcp", "kd-sub5")
	sub5.Subscribe(t, "stream/#", 1)
	sub3 := persistentV3(nodes[1], t, "tls", "kd-sub3")
	sub3.Subscribe(t, "stream/#", 1)
	drain.v5(sub5, c5)
	drain.v3(sub3, c3)

	const total = 10000
	pub := nodes[0].ConnectV5(t, "tcp", "kd-pub")
	for i := range total {
		if i == total/2 {
			killNode(t, nodes[1])
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := pub.Client.Publish(ctx, &paho.Publish{Topic: "stream/k", QoS: 1, Payload: []byte(strconv.Itoa(i))})
		cancel()
		if err != nil || r.ReasonCode >= 0x80 {
			t.Fatalf("publish %d: %v %+v", i, err, r)
		}
	}
	nodes[1].Restart()
	sub5 = persistentV5(nodes[1], t, "tcp", "kd-sub5")
	if !sub5.SessionPresent {
		t.Fatal("node 2 lost the MQTT 5 session")
	}
	sub3 = persistentV3(nodes[1], t, "tls", "kd-sub3")
	drain.v5(sub5, c5)
	drain.v3(sub3, c3)
	c5.waitAll(t, "MQTT 5 subscriber", total, 90*time.Second)
	c3.waitAll(t, "MQTT 3.1.1 subscriber", total, 60*time.Second)
}

// TestClusterQoS1SurvivesNATSRestart: a persistent subscriber's node is
// down while 500 QoS 1 messages are published and acknowledged on another
// node; then NATS itself is restarted (file storage), then the node: the
// subscriber gets all 500.
func TestClusterQoS1SurvivesNATSRestart(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startDurableClusterNodes(t, ns)
	sub := persistentV5(nodes[0], t, "tcp", "nr-sub")
	sub.Subscribe(t, "dur/#", 1)
	killNode(t, nodes[0])
	pub := nodes[1].ConnectV3(t, "tcp", "nr-pub") // MQTT 3.1.1 publisher
	const total = 500
	for i := range total {
		pub.Publish(t, "dur/x", 1, false, []byte(strconv.Itoa(i)))
	}
	ns.stop()
	ns.start()
	nodes[0].Restart()
	c := newCounter()
	drain := newDrains(t)
	sub = persistentV5(nodes[0], t, "tcp", "nr-sub")
	drain.v5(sub, c)
	c.waitAll(t, "subscriber", total, 60*time.Second)
}

// waitPayloads waits until c has counted every payload of want.
func (c *counter) waitPayloads(t *testing.T, who string, d time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var miss []string
		c.mu.Lock()
		for _, w := range want {
			if c.got[w] == 0 {
				miss = append(miss, w)
			}
		}
		c.mu.Unlock()
		if len(miss) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d messages never arrived (first: %s)", who, len(miss), len(want), miss[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publishUntil publishes QoS 1 messages prefix-0, prefix-1… until c has
// one of them (a subscription's interest takes a moment to reach NATS).
func publishUntil(t *testing.T, pub *V3, topic, prefix string, c *counter, who string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		pub.Publish(t, topic, 1, false, []byte(fmt.Sprintf("%s-%d", prefix, i)))
		time.Sleep(200 * time.Millisecond)
		c.mu.Lock()
		n := 0
		for p, k := range c.got {
			if strings.HasPrefix(p, prefix+"-") {
				n += k
			}
		}
		c.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: nothing published on %s arrived", who, topic)
		}
	}
}

// TestClusterSessionFollowsClient: persistent sessions of an MQTT 5
// (paho.golang) and an MQTT 3.1.1 (paho.mqtt.golang) client on node 1 are
// taken over by the same client ids on node 2: node 1's connections are
// closed (MQTT 5: DISCONNECT 0x8E, Session taken over), and without
// subscribing again the clients get on node 2 what is published for
// their subscriptions. Then they go offline; the QoS 1 messages published
// meanwhile reach them when they come back on node 3 (and only them: not
// another client of node 3 that subscribed since), and their
// subscriptions are live there.
func TestClusterSessionFollowsClient(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	pub := nodes[2].ConnectV3(t, "tls", "follow-pub")
	c5 := newCounter()
	c3 := newCounter()
	drain := newDrains(t)

	old5 := persistentV5(nodes[0], t, "wss", "follow5")
	old5.Subscribe(t, "follow/5/#", 1)
	old3 := persistentV3(nodes[0], t, "tcp", "follow3")
	old3.Subscribe(t, "follow/3/+", 1)

	new5 := persistentV5(nodes[1], t, "tcp", "follow5")
	select {
	case d := <-old5.Disconnect:
		if d.ReasonCode != 0x8E {
			t.Fatalf("node 1 closed the MQTT 5 connection with %#x, want 0x8E", d.ReasonCode)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("node 1's MQTT 5 connection not taken over")
	}
	new3 := persistentV3(nodes[1], t, "ws", "follow3")
	for deadline := time.Now().Add(15 * time.Second); !old3.Lost.Load(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node 1's MQTT 3.1.1 connection not taken over")
		}
	}
	// No SUBSCRIBE on node 2: the sessions' subscriptions came along.
	drain.v5(new5, c5)
	drain.v3(new3, c3)
	publishUntil(t, pub, "follow/5/a", "on2", c5, "MQTT 5 session on node 2")
	publishUntil(t, pub, "follow/3/a", "on2", c3, "MQTT 3.1.1 session on node 2")
	if new3.Lost.Load() || len(new5.Disconnect) > 0 {
		t.Fatal("the newer connection was closed")
	}

	// Offline; 50 QoS 1 messages each wait in the cluster; back on node 3.
	_ = new5.Client.Disconnect(&paho.Disconnect{ReasonCode: 0})
	new3.Client.Disconnect(100)
	time.Sleep(500 * time.Millisecond)
	const n = 50
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("away-%d", i))
		pub.Publish(t, "follow/5/b", 1, false, []byte(want[i]))
		pub.Publish(t, "follow/3/b", 1, false, []byte(want[i]))
	}
	// A client of node 3 that subscribes now gets none of them.
	by := nodes[2].ConnectV5(t, "tcp", "follow-bystander")
	by.Subscribe(t, "follow/#", 1)
	cb := newCounter()
	drain.v5(by, cb)
	back5 := persistentV5(nodes[2], t, "tcp", "follow5")
	back3 := persistentV3(nodes[2], t, "tls", "follow3")
	drain.v5(back5, c5)
	drain.v3(back3, c3)
	c5.waitPayloads(t, "MQTT 5 session back on node 3", 30*time.Second, want...)
	c3.waitPayloads(t, "MQTT 3.1.1 session back on node 3", 30*time.Second, want...)
	publishUntil(t, pub, "follow/5/c", "on3", c5, "MQTT 5 session on node 3")
	publishUntil(t, pub, "follow/3/c", "on3", c3, "MQTT 3.1.1 session on node 3")
	cb.mu.Lock()
	defer cb.mu.Unlock()
	for p := range cb.got {
		if strings.HasPrefix(p, "away-") {
			t.Fatalf("a client that subscribed later got %q, queued for the moving sessions", p)
		}
	}
}

// TestClusterSessionOfKilledNode: persistent QoS 1 sessions on node 1, an
// MQTT 5 one connected and an MQTT 3.1.1 one offline; node 1 is killed
// (-9) and stays down while 200 QoS 1 messages for them are published and
// acknowledged on node 3. The clients connect on node 2 and get all 200
// (nothing was handed over by node 1: node 2 takes the sessions from the
// sessions bucket and the stream), and their subscriptions are live there.
func TestClusterSessionOfKilledNode(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startClusterNodes(t, ns)
	pub := nodes[2].ConnectV3(t, "tls", "kill-pub")
	sub5 := persistentV5(nodes[0], t, "tcp", "kill-sub5")
	sub5.Subscribe(t, "orphan/+/x", 1)
	sub3 := persistentV3(nodes[0], t, "ws", "kill-sub3")
	sub3.Subscribe(t, "orphan/#", 1)
	sub3.Client.Disconnect(100)
	c5 := newCounter()
	c3 := newCounter()
	drain := newDrains(t)
	drain.v5(sub5, c5)
	publishUntil(t, pub, "orphan/a/x", "before", c5, "MQTT 5 subscriber on node 1")

	killNode(t, nodes[0])
	const n = 200
	var want []string
	for i := range n {
		want = append(want, strconv.Itoa(i))
		pub.Publish(t, "orphan/b/x", 1, false, []byte(want[i]))
	}
	sub5 = persistentV5(nodes[1], t, "tcp", "kill-sub5")
	sub3 = persistentV3(nodes[1], t, "tls", "kill-sub3")
	drain.v5(sub5, c5)
	drain.v3(sub3, c3)
	c5.waitAll(t, "MQTT 5 session of the killed node", n, 30*time.Second)
	c3.waitAll(t, "MQTT 3.1.1 session of the killed node", n, 30*time.Second)
	publishUntil(t, pub, "orphan/c/x", "after", c5, "MQTT 5 session on node 2")
	publishUntil(t, pub, "orphan/c/x", "after3", c3, "MQTT 3.1.1 session on node 2")
}

// TestClusterSessionOfRestartedNode: node 1 (bolt storage) is killed (-9)
// while its persistent QoS 1 subscribers are connected, 200 messages for
// them are published and acknowledged on node 3, node 1 is restarted (it
// restores the sessions and queues what waited for them), and only then do
// the clients connect on node 2: node 1 hands its restored sessions over,
// and the clients get all 200 there.
func TestClusterSessionOfRestartedNode(t *testing.T) {
	ns := startNATSServer(t)
	nodes := startDurableClusterNodes(t, ns)
	pub := nodes[2].ConnectV3(t, "tls", "rs-pub")
	sub5 := persistentV5(nodes[0], t, "tcp", "rs-sub5")
	sub5.Subscribe(t, "back/#", 1)
	sub3 := persistentV3(nodes[0], t, "tcp", "rs-sub3")
	sub3.Subscribe(t, "back/#", 1)
	c5 := newCounter()
	c3 := newCounter()
	drain := newDrains(t)
	drain.v5(sub5, c5)
	drain.v3(sub3, c3)
	publishUntil(t, pub, "back/a", "before", c5, "MQTT 5 subscriber on node 1")

	killNode(t, nodes[0])
	const n = 200
	for i := range n {
		pub.Publish(t, "back/b", 1, false, []byte(strconv.Itoa(i)))
	}
	nodes[0].Restart()
	time.Sleep(2 * time.Second) // node 1 takes in what waited in the stream
	sub5 = persistentV5(nodes[1], t, "tcp", "rs-sub5")
	sub3 = persistentV3(nodes[1], t, "ws", "rs-sub3")
	drain.v5(sub5, c5)
	drain.v3(sub3, c3)
	c5.waitAll(t, "MQTT 5 session handed over by the restarted node", n, 30*time.Second)
	c3.waitAll(t, "MQTT 3.1.1 session handed over by the restarted node", n, 30*time.Second)
}
