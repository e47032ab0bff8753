package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// queueLimit is max_queued_messages in the delivery tests.
const queueLimit = 500

// queuedSession is one persistent subscriber of the offline-queue matrix.
type queuedSession struct {
	version int    // 4 (3.1.1) or 5
	qos     byte   // 1 or 2
	door    string // tcp: mosquitto_sub; ws: paho
	n       int    // messages published while it is offline
}

func (s queuedSession) id() string {
	return fmt.Sprintf("q-v%d-q%d-%s-%d", s.version, s.qos, s.door, s.n)
}

func (s queuedSession) topic() string { return "queue/" + s.id() }

// want is how many of the n messages it must get: the queue holds
// max_queued_messages, and what comes after is dropped (the newest, as in
// mosquitto).
func (s queuedSession) want() int { return min(s.n, queueLimit) }

// received is what one reconnect delivered: payloads in order, and whether
// any PUBLISH carried DUP 1.
type received struct {
	payloads []string
	dup      bool
	took     time.Duration
}

// TestOfflineQueueMatrix: persistent subscribers go offline; N messages are
// published to each; each reconnects once and must get all of them (at most
// max_queued_messages), in order, with DUP 0 (they were never sent), within
// 5 s; the messages over the limit are counted in
// $SYS/broker/messages/dropped. Over {3.1.1, 5} × {QoS 1, QoS 2} × {tcp with
// mosquitto_sub, which subscribes again on every connect, ws with paho} ×
// {memory, bolt; no restart, caddy stop and start, kill -9}, for N = 1, 20
// (one window), 21, the queue limit and one more.
//
// Before the fix a reconnecting mosquitto_sub got the first window (20) and
// exited: its SUBSCRIBE (packet identifier 1) collided with a queued message
// mochi had numbered 1, and was refused as "identifier in use"; the tests
// with paho passed because paho does not subscribe again.
func TestOfflineQueueMatrix(t *testing.T) {
	needTool(t, "mosquitto_sub")
	needTool(t, "mosquitto_pub")
	modes := []struct {
		name, storage, restart string
	}{
		{"memory", "", ""},
		{"bolt", "storage bolt", ""},
		{"bolt-stop-start", "storage bolt", "stop"},
		{"bolt-kill9", "storage bolt", "kill9"},
	}
	var sessions []queuedSession
	for _, v := range []int{4, 5} {
		for _, q := range []byte{1, 2} {
			for _, door := range []string{"tcp", "ws"} {
				for _, n := range []int{1, 20, 21, queueLimit, queueLimit + 1} {
					sessions = append(sessions, queuedSession{v, q, door, n})
				}
			}
		}
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			c := startCaddy(t, fmt.Sprintf("max_queued_messages %d\n\tsys_interval 1s\n\t%s", queueLimit, mode.storage))
			for _, s := range sessions {
				s.register(t, c)
			}
			dropped0 := sysDropped(t, c)
			publishAll(t, c, sessions)
			wantDropped := 0
			for _, s := range sessions {
				wantDropped += s.n - s.want()
			}
			waitDropped(t, c, dropped0+wantDropped)
			switch mode.restart {
			case "stop":
				c.Stop()
				c.Restart()
			case "kill9":
				c.Kill9()
				c.Restart()
			}
			for _, s := range sessions {
				got := s.reconnect(t, c)
				var want []string
				for i := 1; i <= s.want(); i++ {
					want = append(want, strconv.Itoa(i))
				}
				if strings.Join(got.payloads, ",") != strings.Join(want, ",") {
					t.Errorf("%s: got %d messages %s, want %d in order", s.id(), len(got.payloads), abbrev(got.payloads), len(want))
				}
				if got.dup {
					t.Errorf("%s: a message never sent before came with DUP 1", s.id())
				}
				if got.took > 5*time.Second {
					t.Errorf("%s: took %v, want within 5 s", s.id(), got.took)
				}
			}
		})
	}
}

func abbrev(p []string) string {
	if len(p) > 8 {
		return strings.Join(p[:4], ",") + ",...," + strings.Join(p[len(p)-4:], ",")
	}
	return strings.Join(p, ",")
}

// register connects the session for the first time, subscribes and leaves.
func (s queuedSession) register(t *testing.T, c *Caddy) {
	t.Helper()
	if s.door == "tcp" {
		// -E: connect, subscribe and exit.
		out, err := exec.Command("mosquitto_sub", s.mosquittoArgs(c, "-E")...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: mosquitto_sub -E: %v\n%s", s.id(), err, out)
		}
		return
	}
	if s.version == 5 {
		v := persistentV5(c, t, s.door, s.id())
		v.Subscribe(t, s.topic(), s.qos)
		_ = v.Client.Disconnect(&paho.Disconnect{})
		return
	}
	v := persistentV3(c, t, s.door, s.id())
	v.Subscribe(t, s.topic(), s.qos)
	v.Client.Disconnect(100)
}

func (s queuedSession) mosquittoArgs(c *Caddy, extra ...string) []string {
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(c.Ports.TCP), "-c", "-i", s.id(),
		"-q", strconv.Itoa(int(s.qos)), "-t", s.topic()}
	if s.version == 5 {
		args = append(args, "-V", "mqttv5", "-x", "3600")
	} else {
		args = append(args, "-V", "mqttv311")
	}
	return append(args, extra...)
}

// reconnect connects the session again and collects what it is sent.
func (s queuedSession) reconnect(t *testing.T, c *Caddy) received {
	t.Helper()
	start := time.Now()
	var r received
	if s.door == "tcp" {
		args := s.mosquittoArgs(c, "-d", "-C", strconv.Itoa(s.want()), "-W", "10")
		out, _ := exec.Command("mosquitto_sub", args...).CombinedOutput()
		r.took = time.Since(start)
		for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			switch {
			case strings.Contains(line, " received PUBLISH ("):
				r.dup = r.dup || strings.Contains(line, "PUBLISH (d1")
			case strings.HasPrefix(line, "Client "), strings.HasPrefix(line, "Subscribed"), line == "":
			default:
				r.payloads = append(r.payloads, line)
			}
		}
		// Nothing more than the limit may arrive.
		return r
	}
	deadline := time.After(10 * time.Second)
	if s.version == 5 {
		v := persistentV5(c, t, s.door, s.id())
		for len(r.payloads) < s.want() {
			select {
			case m := <-v.Msgs:
				r.payloads = append(r.payloads, string(m.Payload))
				r.dup = r.dup || m.Duplicate()
			case <-deadline:
				r.took = time.Since(start)
				return r
			}
		}
	} else {
		v := persistentV3(c, t, s.door, s.id())
		for len(r.payloads) < s.want() {
			select {
			case m := <-v.Msgs:
				r.payloads = append(r.payloads, string(m.Payload()))
				r.dup = r.dup || m.Duplicate()
			case <-deadline:
				r.took = time.Since(start)
				return r
			}
		}
	}
	r.took = time.Since(start)
	return r
}

// publishAll publishes 1..n to every session's topic with mosquitto_pub, at
// the session's QoS, one publisher per topic at a time.
func publishAll(t *testing.T, c *Caddy, sessions []queuedSession) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(sessions))
	sem := make(chan struct{}, 4)
	for _, s := range sessions {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			var in strings.Builder
			for i := 1; i <= s.n; i++ {
				fmt.Fprintln(&in, i)
			}
			cmd := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Ports.TCP),
				"-q", strconv.Itoa(int(s.qos)), "-t", s.topic(), "-l", "-i", "pub-"+s.id())
			cmd.Stdin = strings.NewReader(in.String())
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s: mosquitto_pub: %v\n%s", s.id(), err, out)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// sysDropped reads $SYS/broker/messages/dropped.
func sysDropped(t *testing.T, c *Caddy) int {
	t.Helper()
	v := c.ConnectV5(t, "tcp", fmt.Sprintf("sys-%d", time.Now().UnixNano()))
	defer v.Client.Disconnect(&paho.Disconnect{})
	v.Subscribe(t, "$SYS/broker/messages/dropped", 0)
	select {
	case m := <-v.Msgs:
		n, err := strconv.Atoi(string(m.Payload))
		if err != nil {
			t.Fatal(err)
		}
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no $SYS/broker/messages/dropped")
	}
	return 0
}

// waitDropped waits until $SYS/broker/messages/dropped reaches want, and
// fails if it goes past it.
func waitDropped(t *testing.T, c *Caddy, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := sysDropped(t, c)
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("$SYS/broker/messages/dropped = %d, want %d", got, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// retainedTopics is how many retained topics TestRetainedWildcard sets.
const retainedTopics = 10000

// TestRetainedWildcard: 10,000 retained messages; a wildcard subscriber
// gets every one of them, in topic order, at QoS 0 and at QoS 1, through
// every door. Before the fix a subscriber got a few thousand of them at
// QoS 0 (mochi's write buffer overflowed) and exactly as many as its queue
// held at QoS 1.
func TestRetainedWildcard(t *testing.T) {
	c := startCaddy(t, "")
	pub := c.ConnectV5(t, "tcp", "retain-pub")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range retainedTopics {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := pub.Client.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("st/%05d", i), QoS: 1, Retain: true, Payload: []byte(strconv.Itoa(i))}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, door := range Doors {
		for _, qos := range []byte{0, 1} {
			t.Run(fmt.Sprintf("%s-qos%d", door, qos), func(t *testing.T) {
				v := c.ConnectV3(t, door, fmt.Sprintf("retain-sub-%s-%d", door, qos))
				v.Subscribe(t, "st/#", qos)
				for i := range retainedTopics {
					select {
					case m := <-v.Msgs:
						if want := fmt.Sprintf("st/%05d", i); m.Topic() != want || !m.Retained() {
							t.Fatalf("message %d: %s (retained %v), want %s retained", i, m.Topic(), m.Retained(), want)
						}
					case <-time.After(10 * time.Second):
						t.Fatalf("got %d of %d retained messages", i, retainedTopics)
					}
				}
			})
		}
	}
}

// TestQoS1BurstsAllDelivered: MQTT.js publishers keeping 100 and 500 QoS 1
// messages in flight send 10,000 to one and to four QoS 1 subscribers (paho
// and MQTT.js) over tcp and ws: every subscriber gets all 10,000 in order.
// Before the fix the broker acknowledged every publish while a
// subscriber's queue overflowed: 3,107-3,958 of 10,000 arrived.
func TestQoS1BurstsAllDelivered(t *testing.T) {
	node := requireNode(t)
	c := startCaddy(t, "")
	const n = 10000
	for _, door := range []string{"tcp", "ws"} {
		for _, inflight := range []int{100, 500} {
			for _, subs := range []int{1, 4} {
				t.Run(fmt.Sprintf("%s-inflight%d-subs%d", door, inflight, subs), func(t *testing.T) {
					topic := fmt.Sprintf("burst/%s/%d/%d", door, inflight, subs)
					var collectors []func() []string
					for i := range subs {
						if i%2 == 0 {
							collectors = append(collectors, pahoCollector(t, c, door, fmt.Sprintf("%s-paho-%d", topic, i), topic, n))
						} else {
							collectors = append(collectors, mqttjsCollector(t, c, node, door, topic, n))
						}
					}
					mqttjsPublish(t, c, node, door, topic, n, inflight)
					for i, collect := range collectors {
						got := collect()
						if len(got) != n {
							t.Fatalf("subscriber %d got %d of %d", i, len(got), n)
						}
						for j, p := range got {
							if p != strconv.Itoa(j) {
								t.Fatalf("subscriber %d: message %d is %q: out of order", i, j, p)
							}
						}
					}
				})
			}
		}
	}
}

// pahoCollector subscribes a paho MQTT 3.1.1 client at QoS 1 and returns a
// function that waits for n messages (or until none comes for 5 s), then
// for anything more for 200 ms.
func pahoCollector(t *testing.T, c *Caddy, door, id, topic string, n int) func() []string {
	v := c.ConnectV3(t, door, strings.ReplaceAll(id, "/", "-"), func(o *pahov3.ClientOptions) {})
	v.Subscribe(t, topic, 1)
	return func() []string {
		var got []string
		quiet := 5 * time.Second
		for {
			select {
			case m := <-v.Msgs:
				got = append(got, string(m.Payload()))
				if len(got) >= n {
					quiet = 200 * time.Millisecond
				}
			case <-time.After(quiet):
				return got
			}
		}
	}
}

// mqttjsCollector starts an MQTT.js subscriber (js/burst.mjs sub) and
// returns a function that waits for it and returns its payloads.
func mqttjsCollector(t *testing.T, c *Caddy, node, door, topic string, n int) func() []string {
	t.Helper()
	cmd := exec.Command(node, "burst.mjs", "sub", c.URL(door), topic, strconv.Itoa(n))
	cmd.Dir = jsDir
	var stdout strings.Builder
	stdoutR, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdoutR)
		first := true
		for sc.Scan() {
			if first && sc.Text() == "ready" {
				first = false
				close(ready)
				continue
			}
			stdout.WriteString(sc.Text() + "\n")
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatal("MQTT.js subscriber ended before subscribing")
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("MQTT.js subscriber did not subscribe")
	}
	return func() []string {
		<-done
		_ = cmd.Wait()
		return strings.Fields(stdout.String())
	}
}

// mqttjsPublish runs js/burst.mjs pub and fails unless every message was
// acknowledged.
func mqttjsPublish(t *testing.T, c *Caddy, node, door, topic string, n, inflight int) {
	t.Helper()
	cmd := exec.Command(node, "burst.mjs", "pub", c.URL(door), topic, strconv.Itoa(n), strconv.Itoa(inflight))
	cmd.Dir = jsDir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"ok":true`) {
		t.Fatalf("MQTT.js publisher: %v\n%s", err, out)
	}
}

// TestSessionTakeoverByAnotherUser: alice's persistent session (MQTT 5,
// paho) has 10 QoS 1 messages queued; bob logs in with alice's client id
// through every door: Session Present 0, none of alice's messages, and
// publishes to alice's topic do not reach him. Before the fix bob got
// alice's queue and subscription (mochi hands a session to any
// connection with its client id).
func TestSessionTakeoverByAnotherUser(t *testing.T) {
	mosquittoPasswd := needTool(t, "mosquitto_passwd")
	pwfile := filepath.Join(t.TempDir(), "passwd")
	for i, user := range []string{"alice", "bob"} {
		args := []string{"-b", pwfile, user, user + "-pass"}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(mosquittoPasswd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	c := startCaddyWith(t, authCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: "password_file " + pwfile})
	for _, door := range Doors {
		t.Run(door, func(t *testing.T) {
			id, topic := "device-"+door, "alice/"+door
			persistent := func(cp *paho.Connect) {
				cp.CleanStart = false
				expiry := uint32(3600)
				cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
			}
			alice := c.ConnectV5(t, door, id, withLogin("alice", "alice-pass"), persistent)
			alice.Subscribe(t, topic, 1)
			_ = alice.Client.Disconnect(&paho.Disconnect{})
			pub := c.ConnectV5(t, "tcp", "pub-"+door, withLogin("alice", "alice-pass"))
			for i := range 10 {
				pub.Publish(t, topic, 1, false, []byte(strconv.Itoa(i)))
			}
			conn := c.Dial(t, door)
			bob := connectV5Over(t, conn, door, id, withLogin("bob", "bob-pass"), persistent)
			if bob.SessionPresent {
				t.Fatal("bob resumed alice's session")
			}
			pub.Publish(t, topic, 1, false, []byte("later"))
			select {
			case m := <-bob.Msgs:
				t.Fatalf("bob got alice's message %q on %s", m.Payload, m.Topic)
			case <-time.After(500 * time.Millisecond):
			}
		})
	}
}
