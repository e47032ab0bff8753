package cluster_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// BenchmarkDelivery measures one publisher → one subscriber, 64-byte
// payloads, on one node (no cluster) and across two nodes through NATS:
// messages per second and the p99 publish-to-receive latency. Run with
//
//	go test -run '^$' -bench BenchmarkDelivery -benchtime 20000x ./broker/cluster
func BenchmarkDelivery(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("one-node/qos%d", qos), func(b *testing.B) {
			bk, err := broker.New(broker.Options{Logger: slog.New(slog.DiscardHandler)}, broker.AnonymousPolicy{Allow: true})
			if err != nil {
				b.Fatal(err)
			}
			defer bk.Shutdown(context.Background())
			addr := serveBench(b, bk)
			benchDelivery(b, addr, addr, qos)
		})
		b.Run(fmt.Sprintf("cross-node/qos%d", qos), func(b *testing.B) {
			nodes, _ := startCluster(b, 2)
			benchDelivery(b, nodes[0].addr, nodes[1].addr, qos)
		})
	}
}

func serveBench(b *testing.B, bk *broker.Broker) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer conn.Close(); _ = bk.Serve(conn, broker.ConnInfo{Door: broker.DoorTCP}) }()
		}
	}()
	return ln.Addr().String()
}

func benchClient(b *testing.B, addr, id string, onMsg func(*paho.Publish)) *paho.Client {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: conn}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			onMsg(r.Packet)
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func benchDelivery(b *testing.B, pubAddr, subAddr string, qos byte) {
	lat := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	n := 0
	sub := benchClient(b, subAddr, "bench-sub", func(p *paho.Publish) {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(p.Payload)))
		lat = append(lat, time.Since(sent))
		n++
		if n == b.N {
			close(done)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "bench/#", QoS: qos}}}); err != nil {
		b.Fatal(err)
	}
	pub := benchClient(b, pubAddr, "bench-pub", nil)
	payload := make([]byte, 64)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := pub.Publish(pctx, &paho.Publish{Topic: "bench/x", QoS: qos, Payload: slices.Clone(payload)}); err != nil {
			b.Fatal(err)
		}
		pcancel()
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("received %d of %d", n, b.N)
	}
	el := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
