package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// receiver is a subscriber of either protocol version.
type receiver interface {
	name() string
	next(timeout time.Duration) (topic string, payload string, ok bool)
}

func (v *V5) name() string { return "v5/" + v.Door }
func (v *V5) next(d time.Duration) (string, string, bool) {
	select {
	case m := <-v.Msgs:
		return m.Topic, string(m.Payload), true
	case <-time.After(d):
		return "", "", false
	}
}

func (v *V3) name() string { return "v3/" + v.Door }
func (v *V3) next(d time.Duration) (string, string, bool) {
	select {
	case m := <-v.Msgs:
		return m.Topic(), string(m.Payload()), true
	case <-time.After(d):
		return "", "", false
	}
}

// TestEveryDoorToEveryDoor publishes from each door with each QoS and each
// protocol version, and checks that a subscriber on every door, of each
// version, receives every message exactly once.
func TestEveryDoorToEveryDoor(t *testing.T) {
	c := startCaddy(t, "")
	var subs []receiver
	for _, door := range Doors {
		v5 := c.ConnectV5(t, door, "sub5-"+door)
		v5.Subscribe(t, "matrix/#", 2)
		v3 := c.ConnectV3(t, door, "sub3-"+door)
		v3.Subscribe(t, "matrix/#", 2)
		subs = append(subs, v5, v3)
	}

	want := map[string]bool{}
	for _, door := range Doors {
		p5 := c.ConnectV5(t, door, "pub5-"+door)
		p3 := c.ConnectV3(t, door, "pub3-"+door)
		for qos := byte(0); qos <= 2; qos++ {
			topic := fmt.Sprintf("matrix/%s/q%d", door, qos)
			p5.Publish(t, topic+"/v5", qos, false, []byte("from v5 "+door))
			p3.Publish(t, topic+"/v3", qos, false, []byte("from v3 "+door))
			want[topic+"/v5"], want[topic+"/v3"] = true, true
		}
	}

	for _, s := range subs {
		got := map[string]int{}
		for range want {
			topic, _, ok := s.next(10 * time.Second)
			if !ok {
				t.Fatalf("%s: timed out after %d of %d messages: %v", s.name(), len(got), len(want), got)
			}
			got[topic]++
		}
		for topic := range want {
			if got[topic] != 1 {
				t.Errorf("%s: %s received %d times", s.name(), topic, got[topic])
			}
		}
		if topic, _, ok := s.next(200 * time.Millisecond); ok {
			t.Errorf("%s: unexpected extra message on %s", s.name(), topic)
		}
	}
}

// TestRetainedToLateSubscriber: a retained message published on one door
// reaches a subscriber that arrives later on each other door.
func TestRetainedToLateSubscriber(t *testing.T) {
	c := startCaddy(t, "")
	for i, pubDoor := range Doors {
		topic := "retained/" + pubDoor
		c.ConnectV5(t, pubDoor, fmt.Sprintf("rpub-%d", i)).Publish(t, topic, 1, true, []byte("kept "+pubDoor))
		for _, subDoor := range Doors {
			s := c.ConnectV3(t, subDoor, "rsub-"+pubDoor+subDoor)
			s.Subscribe(t, topic, 1)
			select {
			case m := <-s.Msgs:
				if string(m.Payload()) != "kept "+pubDoor || !m.Retained() {
					t.Errorf("%s→%s: got %q retained=%v", pubDoor, subDoor, m.Payload(), m.Retained())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s→%s: retained message not delivered", pubDoor, subDoor)
			}
			s.Disconnect(100)
		}
	}
}

// TestWillOnDrop: a client that drops without DISCONNECT on any door has its
// will published; one that disconnects cleanly does not.
func TestWillOnDrop(t *testing.T) {
	c := startCaddy(t, "")
	sub := c.ConnectV5(t, "tcp", "will-watcher")
	sub.Subscribe(t, "wills/#", 1)
	for _, door := range Doors {
		w := c.ConnectV5(t, door, "will-"+door, func(cp *paho.Connect) {
			cp.WillMessage = &paho.WillMessage{Topic: "wills/" + door, Payload: []byte("gone " + door), QoS: 1}
		})
		// Drop the network connection without DISCONNECT.
		_ = w.Raw.Close()
		select {
		case m := <-sub.Msgs:
			if m.Topic != "wills/"+door || string(m.Payload) != "gone "+door {
				t.Errorf("%s: got will %s %q", door, m.Topic, m.Payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: will not published", door)
		}
	}
	clean := c.ConnectV3(t, "ws", "will-clean", func(o *pahov3.ClientOptions) {
		o.SetWill("wills/clean", "should not appear", 1, false)
	})
	clean.Disconnect(250)
	select {
	case m := <-sub.Msgs:
		t.Errorf("will sent after a clean disconnect: %s %q", m.Topic, m.Payload)
	case <-time.After(time.Second):
	}
}

// TestMosquittoClients uses Debian's mosquitto_pub and mosquitto_sub over
// 1883-style plain TCP and over TLS with --cafile set to Caddy's internal
// root, as the README tells users to.
func TestMosquittoClients(t *testing.T) {
	needTool(t, "mosquitto_sub")
	c := startCaddy(t, "")
	tcp := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(c.Ports.TCP)}
	tls := []string{"-h", "localhost", "-p", fmt.Sprint(c.Ports.TLS), "--cafile", c.RootPath()}
	for _, tc := range []struct {
		name     string
		pub, sub []string
	}{
		{"tcp→tcp", tcp, tcp},
		{"tls→tls", tls, tls},
		{"tcp→tls", tcp, tls},
		{"tls→tcp", tls, tcp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "mosq/" + strings.ReplaceAll(tc.name, "→", "-")
			args := append([]string{"-t", topic, "-C", "2", "-W", "10", "-q", "1", "-V", "mqttv311"}, tc.sub...)
			sub := exec.Command("mosquitto_sub", args...)
			var out strings.Builder
			sub.Stdout, sub.Stderr = &out, &out
			if err := sub.Start(); err != nil {
				t.Fatal(err)
			}
			// mosquitto_sub has no "subscribed" signal: publish until it has
			// seen two messages (bounded by its own -W 10).
			done := make(chan error, 1)
			go func() { done <- sub.Wait() }()
			sent := 0
			for {
				pub := exec.Command("mosquitto_pub", append([]string{"-t", topic, "-m", fmt.Sprintf("m%d", sent), "-q", "1"}, tc.pub...)...)
				if b, err := pub.CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub: %v\n%s", err, b)
				}
				sent++
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
					}
					lines := strings.Fields(out.String())
					if len(lines) != 2 || !strings.HasPrefix(lines[0], "m") {
						t.Fatalf("mosquitto_sub printed %q", out.String())
					}
					return
				case <-time.After(300 * time.Millisecond):
				}
				if sent > 30 {
					t.Fatalf("mosquitto_sub received nothing: %s", out.String())
				}
			}
		})
	}
}
