package broker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
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

// TestCaughtMessagesDoNotHoldTheConnack: a message caught in a session's
// handover is delivered after the successor's CONNACK, not before it. With
// storage each caught message waits for the disk, and with publishers busy
// hundreds are caught: delivered first, they held a resuming client's
// CONNACK back for up to 0.6 s, seconds under load. Here a hook holds the
// caught message's delivery, as a slow disk would, and the CONNACK must
// arrive meanwhile; then the message.
func TestCaughtMessagesDoNotHoldTheConnack(t *testing.T) {
	pause := &pauseHook{
		id: "caught", topic: "caught/t",
		establishing: make(chan struct{}), establish: make(chan struct{}),
		encoding: make(chan struct{}, 1), encode: make(chan struct{}),
	}
	var release sync.Once
	releaseAll := func() {
		release.Do(func() {
			close(pause.establish)
			close(pause.encode)
		})
	}
	defer releaseAll()
	b := newBroker(t, Options{Hooks: []mqtt.Hook{pause}}, AnonymousPolicy{Allow: true})
	url := serveStorageTCP(t, b)
	msgs := make(chan string, 10)
	first := storageConnectV3(t, url, "caught", false, msgs)
	storageWait(t, first.Subscribe("caught/t", 1, nil), "subscribe")
	first.Disconnect(100)
	pub := storageConnectV3(t, url, "caught-pub", true, nil)

	// Resume; the hook stops the new connection after handoverHook has
	// marked the old session and before mochi registers the new one.
	pause.armed.Store(true)
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("caught").SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { msgs <- m.Topic() + " " + string(m.Payload()) })
	next := pahov3.NewClient(opts)
	connected := next.Connect()
	t.Cleanup(func() { next.Disconnect(0) })
	select {
	case <-pause.establishing:
	case <-time.After(10 * time.Second):
		t.Fatal("the resumption never reached OnSessionEstablish")
	}
	storageWait(t, pub.Publish("caught/t", 1, false, "m"), "publish") // caught: no successor registered yet
	pause.establish <- struct{}{}

	select {
	case <-pause.encoding:
	case <-time.After(10 * time.Second):
		t.Fatal("the caught message was not delivered")
	}
	if !connected.WaitTimeout(5*time.Second) || connected.Error() != nil {
		t.Fatalf("no CONNACK while a caught message was being delivered (err %v)", connected.Error())
	}
	releaseAll()
	select {
	case m := <-msgs:
		if m != "caught/t m" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the caught message never arrived")
	}
}

// pauseHook stops one connection (or resumption) of client id in
// OnSessionEstablish, and the encoding of a PUBLISH on topic to it.
type pauseHook struct {
	mqtt.HookBase
	id, topic    string
	armed        atomic.Bool
	establishing chan struct{} // closed when the resumption is stopped
	establish    chan struct{} // lets it go on
	encoding     chan struct{} // a PUBLISH on topic is being encoded
	encode       chan struct{} // closed: lets it go on
}

func (h *pauseHook) ID() string { return "test-pause" }

func (h *pauseHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnPacketEncode
}

func (h *pauseHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if cl.ID == h.id && h.armed.CompareAndSwap(true, false) {
		close(h.establishing)
		<-h.establish
	}
}

func (h *pauseHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.ID == h.id && pk.FixedHeader.Type == packets.Publish && pk.TopicName == h.topic {
		select {
		case h.encoding <- struct{}{}:
		default:
		}
		<-h.encode
	}
	return pk
}
