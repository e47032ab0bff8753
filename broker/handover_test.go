package broker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// TestResumeWhilePublishingLosesNothing: a persistent subscriber resumes
// its session again and again (after a disconnect, and by taking over its
// live connection) while publishers send QoS 1 messages to it. Every
// message a publisher got a PUBACK for must reach the subscriber. mochi
// copies the old connection's queue into the new one and registers the new
// connection only after: a message delivered in between went into the old
// queue and was lost (MOCHI.md row 32).
func TestResumeWhilePublishingLosesNothing(t *testing.T) {
	for _, st := range []Storage{{}, {Kind: StorageBolt, Path: t.TempDir() + "/broker.bolt"}} {
		name := "memory"
		if st.Kind == StorageBolt {
			name = "bolt"
		}
		t.Run(name, func(t *testing.T) {
			// Room for every message: none may be dropped by the queue limit.
			b := newBroker(t, Options{Storage: st, MaxQueuedMessages: 10000}, AnonymousPolicy{Allow: true})
			url := serveStorageTCP(t, b)
			var mu sync.Mutex
			seen := make(map[string]bool)
			record := func(_ pahov3.Client, m pahov3.Message) {
				mu.Lock()
				seen[string(m.Payload())] = true
				mu.Unlock()
			}
			connect := func() pahov3.Client {
				opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("resumer").SetProtocolVersion(4).
					SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
					SetKeepAlive(30 * time.Second).SetDefaultPublishHandler(record)
				c := pahov3.NewClient(opts)
				if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("connect: %v", tok.Error())
					return nil
				}
				return c
			}
			sub := connect()
			if sub == nil {
				t.FailNow()
			}
			storageWait(t, sub.Subscribe("resume/#", 1, nil), "subscribe")

			const publishers, perPublisher = 4, 1500
			done := make(chan struct{})
			var wg sync.WaitGroup
			for p := 0; p < publishers; p++ {
				pub := storageConnectV3(t, url, fmt.Sprintf("resume-pub-%d", p), true, nil)
				wg.Add(1)
				go func(p int) {
					defer wg.Done()
					var toks []pahov3.Token
					for i := 0; i < perPublisher; i++ {
						toks = append(toks, pub.Publish("resume/x", 1, false, fmt.Sprintf("%d-%d", p, i)))
						if len(toks) == 20 {
							for _, tok := range toks {
								if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
									t.Errorf("publish: %v", tok.Error())
									return
								}
							}
							toks = toks[:0]
						}
					}
					for _, tok := range toks {
						if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
							t.Errorf("publish: %v", tok.Error())
						}
					}
				}(p)
			}
			go func() { wg.Wait(); close(done) }()

			// Resume until the publishers are done: alternately after a
			// DISCONNECT and by taking over the live connection.
			resumes := 0
			for running := true; running; resumes++ {
				select {
				case <-done:
					running = false
				default:
				}
				if resumes%2 == 0 {
					sub.Disconnect(0)
				}
				next := connect()
				if next == nil {
					break
				}
				if resumes%2 == 1 {
					sub.Disconnect(0)
				}
				sub = next
				time.Sleep(time.Duration(resumes%5) * time.Millisecond)
			}
			defer sub.Disconnect(0)

			want := publishers * perPublisher
			deadline := time.Now().Add(20 * time.Second)
			for {
				mu.Lock()
				n := len(seen)
				mu.Unlock()
				if n == want {
					break
				}
				if time.Now().After(deadline) {
					var missing []string
					mu.Lock()
					for p := 0; p < publishers && len(missing) < 10; p++ {
						for i := 0; i < perPublisher && len(missing) < 10; i++ {
							if k := fmt.Sprintf("%d-%d", p, i); !seen[k] {
								missing = append(missing, k)
							}
						}
					}
					mu.Unlock()
					t.Fatalf("after %d resumptions %d of %d acknowledged messages delivered; missing e.g. %v (dropped by a queue limit: %d)",
						resumes, n, want, missing, b.Server().Info.MessagesDropped)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%d resumptions, all %d messages delivered", resumes, want)
		})
	}
}
