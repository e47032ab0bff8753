package integration

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestReloadKeepsSessions subscribes clients of both protocol versions on
// all four doors, streams QoS 1 messages from a publisher on every door while
// `caddy reload` applies changed configs, and checks that no client lost its
// connection and every subscriber got every message in order.
func TestReloadKeepsSessions(t *testing.T) {
	c := startCaddy(t, "")
	type sub struct {
		r    receiver
		lost func() bool
	}
	var subs []sub
	for _, door := range Doors {
		v5 := c.ConnectV5(t, door, "rl-sub5-"+door)
		v5.Subscribe(t, "reload/#", 1)
		v3 := c.ConnectV3(t, door, "rl-sub3-"+door)
		v3.Subscribe(t, "reload/#", 1)
		subs = append(subs, sub{v5, v5.Lost.Load}, sub{v3, v3.Lost.Load})
	}
	var pubs []*V5
	for _, door := range Doors {
		pubs = append(pubs, c.ConnectV5(t, door, "rl-pub-"+door))
	}

	const perPublisher = 150
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func(p *V5) {
			defer wg.Done()
			for i := 0; i < perPublisher; i++ {
				p.Publish(t, "reload/"+p.Door, 1, false, []byte(fmt.Sprint(i)))
				time.Sleep(5 * time.Millisecond)
			}
		}(p)
	}
	for i := 0; i < 3; i++ {
		time.Sleep(200 * time.Millisecond)
		// A real change each time, so Caddy does not skip the reload.
		c.Reload(CaddyConfig{Body: fmt.Sprintf("reload %d", i)})
	}
	wg.Wait()

	for _, s := range subs {
		next := map[string]int{}
		for n := 0; n < perPublisher*len(pubs); n++ {
			topic, payload, ok := s.r.next(10 * time.Second)
			if !ok {
				t.Fatalf("%s: got %d of %d messages", s.r.name(), n, perPublisher*len(pubs))
			}
			if payload != fmt.Sprint(next[topic]) {
				t.Fatalf("%s: %s: got message %s, want %d (lost or reordered)", s.r.name(), topic, payload, next[topic])
			}
			next[topic]++
		}
		if s.lost() {
			t.Errorf("%s lost its connection during reload", s.r.name())
		}
	}
	for _, p := range pubs {
		if p.Lost.Load() {
			t.Errorf("publisher on %s lost its connection during reload", p.Door)
		}
	}
	// The last config is the one live.
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/", c.Ports.HTTP))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ws reload 2" {
		t.Errorf("page after reload says %q", body)
	}
	if got := c.Goroutines(`caddy-mqtt/caddy-mqtt/broker\.\(\*Broker\)\.Serve`); got < len(subs)+len(pubs) {
		t.Errorf("%d broker sessions running after reload, want at least %d", got, len(subs)+len(pubs))
	}
}

// TestStopDisconnectsCleanly: `caddy stop` with clients on every door returns
// within 5 s; MQTT 5 clients are told why (reason 0x8B, server shutting
// down) and MQTT 3 clients see their connection closed.
func TestStopDisconnectsCleanly(t *testing.T) {
	c := startCaddy(t, "")
	var v5s []*V5
	var v3s []*V3
	for _, door := range Doors {
		v5 := c.ConnectV5(t, door, "stop5-"+door)
		v5.Subscribe(t, "stop/#", 1)
		v5s = append(v5s, v5)
		v3 := c.ConnectV3(t, door, "stop3-"+door)
		v3.Subscribe(t, "stop/#", 1)
		v3s = append(v3s, v3)
	}
	// A connection that never sends CONNECT must not hold up shutdown.
	silent := c.Dial(t, "tcp")
	defer silent.Close()

	took := c.Stop()
	t.Logf("caddy stop took %v", took)
	if took > 5*time.Second {
		t.Errorf("caddy stop took %v, want under 5s", took)
	}
	for _, v := range v5s {
		select {
		case d := <-v.Disconnect:
			if d.ReasonCode != 0x8B {
				t.Errorf("v5 on %s: DISCONNECT reason %#x, want 0x8B", v.Door, d.ReasonCode)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("v5 on %s: no DISCONNECT from the server", v.Door)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, v := range v3s {
		for v.IsConnected() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if v.IsConnected() {
			t.Errorf("v3 on %s still connected after stop", v.Door)
		}
	}
}
