// Command storagebench compares mochi-mqtt's file stores (bolt, badger,
// pebble) for caddy-mqtt's `storage` option: the cost of queueing QoS 1
// messages for an offline persistent session, the time to start a broker on
// a store holding them, and the time until a reconnecting subscriber has
// them all. It is a module of its own so the main module does not depend on
// badger and pebble.
//
//	cd cmd/storagebench && go run . -n 5000
//
// The binary size delta is measured by building ./sizes/{base,badger,pebble}
// (see the Persistence section of the repository README).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/badger"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.etcd.io/bbolt"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

type kind struct {
	name string
	hook func(dir string) (mqtt.Hook, any)
}

// ours is caddy-mqtt's broker with `storage bolt` (mochi's bolt hook plus
// the fixes in broker/storage.go).
const ours = "caddy-mqtt storage bolt (fsync)"

var kinds = []kind{
	{name: ours},
	{"bolt (fsync every write)", func(dir string) (mqtt.Hook, any) {
		return new(bolt.Hook), &bolt.Options{Path: filepath.Join(dir, "b.bolt"), Options: &bbolt.Options{Timeout: time.Second}}
	}},
	{"badger (SyncWrites=false, mochi default)", func(dir string) (mqtt.Hook, any) {
		o := badgerdb.DefaultOptions(dir).WithLogger(nil)
		return new(badger.Hook), &badger.Options{Path: dir, Options: &o}
	}},
	{"badger (SyncWrites=true)", func(dir string) (mqtt.Hook, any) {
		o := badgerdb.DefaultOptions(dir).WithLogger(nil).WithSyncWrites(true)
		return new(badger.Hook), &badger.Options{Path: dir, Options: &o}
	}},
	{"pebble (NoSync, mochi default)", func(dir string) (mqtt.Hook, any) {
		return new(pebble.Hook), &pebble.Options{Path: dir, Mode: pebble.NoSync}
	}},
	{"pebble (Sync)", func(dir string) (mqtt.Hook, any) {
		return new(pebble.Hook), &pebble.Options{Path: dir, Mode: pebble.Sync}
	}},
}

func main() {
	n := flag.Int("n", 5000, "QoS 1 messages to queue")
	flag.Parse()
	fmt.Printf("%-42s %12s %10s %12s %12s %10s %10s\n", "store", "queue n", "per msg", "start", "redeliver", "delivered", "disk")
	for _, k := range kinds {
		if err := run(k, *n); err != nil {
			fmt.Fprintln(os.Stderr, k.name, err)
			os.Exit(1)
		}
	}
}

type server interface{ Close() error }

type brokerServer struct {
	b *broker.Broker
	l net.Listener
}

func (s brokerServer) Close() error {
	s.l.Close()
	return s.b.Shutdown(context.Background())
}

func start(k kind, dir string) (server, string, time.Duration, error) {
	t0 := time.Now()
	if k.name == ours {
		b, err := broker.New(broker.Options{
			Storage: broker.Storage{Kind: broker.StorageBolt, Path: filepath.Join(dir, "broker.bolt")},
			Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		}, broker.AnonymousPolicy{Allow: true})
		if err != nil {
			return nil, "", 0, err
		}
		startup := time.Since(t0)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", 0, err
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _ = b.Serve(c, broker.ConnInfo{Door: broker.Doors[0]}) }()
			}
		}()
		return brokerServer{b, l}, "tcp://" + l.Addr().String(), startup, nil
	}
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	_ = s.AddHook(new(auth.AllowHook), nil)
	h, cfg := k.hook(dir)
	if err := s.AddHook(h, cfg); err != nil {
		return nil, "", 0, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", 0, err
	}
	addr := l.Addr().String()
	l.Close()
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		return nil, "", 0, err
	}
	if err := s.Serve(); err != nil {
		return nil, "", 0, err
	}
	return s, "tcp://" + addr, time.Since(t0), nil
}

func client(url, id string, clean bool, got chan<- struct{}) (pahov3.Client, error) {
	o := pahov3.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetProtocolVersion(4).SetOrderMatters(true)
	if got != nil {
		o.SetDefaultPublishHandler(func(pahov3.Client, pahov3.Message) { got <- struct{}{} })
	}
	c := pahov3.NewClient(o)
	tok := c.Connect()
	tok.Wait()
	return c, tok.Error()
}

func run(k kind, n int) error {
	dir, err := os.MkdirTemp("", "storagebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	s, url, _, err := start(k, dir)
	if err != nil {
		return err
	}
	sub, err := client(url, "sub", false, nil)
	if err != nil {
		return err
	}
	sub.Subscribe("bench/#", 1, nil).Wait()
	sub.Disconnect(50)
	pub, err := client(url, "pub", true, nil)
	if err != nil {
		return err
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		tok := pub.Publish("bench/x", 1, false, fmt.Sprintf("message %d", i))
		tok.Wait()
		if tok.Error() != nil {
			return tok.Error()
		}
	}
	queue := time.Since(t0)
	pub.Disconnect(50)
	_ = s.Close()

	s, url, startup, err := start(k, dir)
	if err != nil {
		return err
	}
	got := make(chan struct{}, n)
	t0 = time.Now()
	sub, err = client(url, "sub", false, got)
	if err != nil {
		return err
	}
	delivered := 0
	deliver := time.Duration(0)
wait:
	for delivered < n {
		select {
		case <-got:
			delivered++
			deliver = time.Since(t0)
		case <-time.After(3 * time.Second):
			break wait
		}
	}
	sub.Disconnect(50)
	_ = s.Close()
	var size int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	fmt.Printf("%-42s %12v %10v %12v %12v %10d %9.1fM\n", k.name, queue.Round(time.Millisecond),
		(queue / time.Duration(n)).Round(time.Microsecond), startup.Round(time.Millisecond),
		deliver.Round(time.Millisecond), delivered, float64(size)/(1<<20))
	return nil
}
