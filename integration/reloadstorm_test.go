package integration

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReloadStorm runs 20 `caddy reload`s, each a real config change, while
// 8 publishers (MQTT 5 and 3.1.1 on each of tcp, tls, ws, wss) stream 10,000
// QoS 1 messages to 8 subscribers (the same mix). No client may lose its
// connection, every subscriber must get all 10,000 messages, and each
// publisher's messages must arrive in the order they were sent.
func TestReloadStorm(t *testing.T) {
	const (
		reloads  = 20
		messages = 10000
	)
	c := startCaddy(t, "")

	type sub struct {
		r    receiver
		lost func() bool
	}
	var subs []sub
	for _, door := range Doors {
		v5 := c.ConnectV5(t, door, "storm-sub5-"+door)
		v5.Subscribe(t, "storm/#", 1)
		v3 := c.ConnectV3(t, door, "storm-sub3-"+door)
		v3.Subscribe(t, "storm/#", 1)
		subs = append(subs, sub{v5, func() bool { return v5.Lost.Load() || len(v5.Disconnect) > 0 }},
			sub{v3, func() bool { return v3.Lost.Load() || !v3.IsConnected() }})
	}
	type publisher struct {
		name    string
		publish func(i int)
		lost    func() bool
	}
	var pubs []publisher
	for _, door := range Doors {
		v5 := c.ConnectV5(t, door, "storm-pub5-"+door)
		pubs = append(pubs, publisher{"v5-" + door,
			func(i int) { v5.Publish(t, "storm/v5-"+door, 1, false, []byte(strconv.Itoa(i))) },
			func() bool { return v5.Lost.Load() || len(v5.Disconnect) > 0 }})
		v3 := c.ConnectV3(t, door, "storm-pub3-"+door)
		pubs = append(pubs, publisher{"v3-" + door,
			func(i int) { v3.Publish(t, "storm/v3-"+door, 1, false, []byte(strconv.Itoa(i))) },
			func() bool { return v3.Lost.Load() || !v3.IsConnected() }})
	}
	perPublisher := messages / len(pubs)

	// The reloads are spread over the stream: reload i starts once
	// (i+1)/21 of the messages are published, so every one of them happens
	// while messages flow.
	var published atomic.Int64
	// Subscribers check order and count as they go.
	errs := make(chan error, len(subs))
	var recv sync.WaitGroup
	for _, s := range subs {
		recv.Add(1)
		go func() {
			defer recv.Done()
			next := map[string]int{}
			for n := 0; n < perPublisher*len(pubs); n++ {
				topic, payload, ok := s.r.next(20 * time.Second)
				if !ok {
					errs <- fmt.Errorf("%s: got %d of %d messages", s.r.name(), n, perPublisher*len(pubs))
					return
				}
				if payload != strconv.Itoa(next[topic]) {
					errs <- fmt.Errorf("%s: %s: got message %s, want %d (lost or reordered)", s.r.name(), topic, payload, next[topic])
					return
				}
				next[topic]++
			}
		}()
	}

	logFrom := len(c.Log()) // start-up logs probes of the doors
	start := time.Now()
	var streamEnd [8]time.Time
	// Each publisher holds its last 4% until the last reload is done, so
	// that messages still flow when it ends (the reloads are spaced by the
	// messages published; a reload takes longer than a few hundred
	// messages on a fast machine).
	lastReloadDone := make(chan struct{})
	holdAt := perPublisher - perPublisher/25
	var pubWG sync.WaitGroup
	for i, p := range pubs {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			for k := range perPublisher {
				if k == holdAt {
					<-lastReloadDone
				}
				p.publish(k)
				published.Add(1)
			}
			streamEnd[i] = time.Now()
		}()
	}

	var lastReload time.Time
	for i := range reloads {
		for published.Load() < int64((i+1)*messages/(reloads+1)) {
			time.Sleep(time.Millisecond)
		}
		c.Reload(CaddyConfig{Body: fmt.Sprintf("storm %d", i)})
		lastReload = time.Now()
	}
	close(lastReloadDone)
	reloadsTook := time.Since(start)
	pubWG.Wait()
	streamTook := time.Since(start)
	recv.Wait()
	deliveredTook := time.Since(start)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d reloads in %v; %d messages published in %v, all %d deliveries done in %v",
		reloads, reloadsTook.Round(time.Millisecond), perPublisher*len(pubs), streamTook.Round(time.Millisecond),
		perPublisher*len(pubs)*len(subs), deliveredTook.Round(time.Millisecond))
	var streamEnded time.Time
	for i := range pubs {
		if streamEnd[i].After(streamEnded) {
			streamEnded = streamEnd[i]
		}
	}
	if !streamEnded.After(lastReload) {
		t.Errorf("the stream ended before the last reload")
	}
	for _, p := range pubs {
		if p.lost() {
			t.Errorf("publisher %s lost its connection", p.name)
		}
	}
	for _, s := range subs {
		if s.lost() {
			t.Errorf("subscriber %s lost its connection", s.r.name())
		}
	}

	// The last config is live.
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/", c.Ports.HTTP))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("ws storm %d", reloads-1); string(body) != want {
		t.Errorf("page after the storm says %q, want %q", body, want)
	}
	if n := c.Goroutines(`broker\.\(\*Broker\)\.Serve`); n != len(subs)+len(pubs) {
		t.Errorf("%d broker sessions after the storm, want %d", n, len(subs)+len(pubs))
	}
	for _, line := range strings.Split(c.Log()[logFrom:], "\n") {
		if strings.Contains(line, `"level":"error"`) {
			t.Errorf("caddy logged an error: %s", line)
		}
	}
}
