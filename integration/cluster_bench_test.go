package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// BenchmarkClusterDelivery compares one Caddy node with two Caddy nodes
// joined through a real nats-server: one publisher (on node 1) and one
// subscriber (on node 1, or on node 2 across the cluster), 64-byte
// payloads, paho.golang over loopback TCP. For each QoS it reports
//
//   - msgs/s: delivered per second, the publisher as fast as the
//     subscriber keeps up (at most 1000 messages published and not yet
//     received; QoS 1: 16 publishes in flight);
//   - p50-µs, p99-µs: publish-to-receive latency at a steady 1000 msg/s
//     (3000 messages), apart from the throughput run;
//   - node1-cpu-µs/msg, node2-cpu-µs/msg, nats-cpu-µs/msg: CPU (user +
//     system, /proc/<pid>/stat) each process spent during the throughput
//     run, per delivered message.
//
// Run it alone, it takes about a minute:
//
//	./xcaddy.sh build
//	CADDY_BIN=$PWD/caddy nice -n 10 go test -run '^$' -bench BenchmarkClusterDelivery -benchtime 20000x ./integration
func BenchmarkClusterDelivery(b *testing.B) {
	ns := startNATSServer(b)
	single := startCaddy(b, "")
	var nodes []*Caddy
	for i := 1; i <= 2; i++ {
		nodes = append(nodes, startCaddy(b, fmt.Sprintf("cluster nats {\n\t\t\turl %s\n\t\t\tnode bench%d\n\t\t}", ns.url(), i)))
	}
	natsPid := ns.cmd.Process.Pid
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("one-node/qos%d", qos), func(b *testing.B) {
			benchCluster(b, single, single, qos, map[string]int{"node1": single.Pid()})
		})
		b.Run(fmt.Sprintf("cross-node/qos%d", qos), func(b *testing.B) {
			benchCluster(b, nodes[0], nodes[1], qos,
				map[string]int{"node1": nodes[0].Pid(), "node2": nodes[1].Pid(), "nats": natsPid})
		})
	}
}

var benchRun atomic.Int64

func benchCluster(b *testing.B, pubNode, subNode *Caddy, qos byte, pids map[string]int) {
	run := benchRun.Add(1)
	topic := fmt.Sprintf("bench/%d", run)
	var (
		mu       sync.Mutex
		lat      []time.Duration
		received atomic.Int64
		want     atomic.Int64
		done     = make(chan struct{}, 1)
	)
	sub := subNode.ConnectV5(b, "tcp", fmt.Sprintf("bench-sub-%d", run))
	go func() {
		for m := range sub.Msgs {
			if len(m.Payload) < 8 {
				continue
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Payload)))
			mu.Lock()
			lat = append(lat, time.Since(sent))
			mu.Unlock()
			if received.Add(1) == want.Load() {
				done <- struct{}{}
			}
		}
	}()
	sub.Subscribe(b, topic, qos)
	pub := pubNode.ConnectV5(b, "tcp", fmt.Sprintf("bench-pub-%d", run))
	// The subscription's interest reaches NATS after the SUBACK; wait for a
	// first message before measuring.
	want.Store(1)
	for i := 0; ; i++ {
		publishStamped(b, pub, topic, qos)
		select {
		case <-done:
		case <-time.After(200 * time.Millisecond):
			if i < 50 {
				continue
			}
			b.Fatal("no message crosses")
		}
		break
	}

	time.Sleep(300 * time.Millisecond) // stragglers of the warm-up
	select {
	case <-done:
	default:
	}

	// Latency at a steady rate.
	const latN = 3000
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()
	received.Store(0)
	want.Store(latN)
	tick := time.NewTicker(time.Millisecond)
	for range latN {
		<-tick.C
		publishStamped(b, pub, topic, qos)
	}
	tick.Stop()
	waitDone(b, done, &received, latN)
	mu.Lock()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	lat = lat[:0]
	mu.Unlock()

	// Throughput, with CPU per process.
	received.Store(0)
	want.Store(int64(b.N))
	before := map[string]int64{}
	for name, pid := range pids {
		before[name] = procCPUTime(b, pid)
	}
	b.ResetTimer()
	start := time.Now()
	workers := 1
	if qos > 0 {
		workers = 16
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Add(1) <= int64(b.N) {
				for deadline := time.Now().Add(30 * time.Second); sent.Load()-received.Load() > 1000; {
					if time.Now().After(deadline) {
						return // waitDone reports it
					}
					time.Sleep(50 * time.Microsecond)
				}
				publishStamped(b, pub, topic, qos)
			}
		}()
	}
	wg.Wait()
	waitDone(b, done, &received, b.N)
	el := time.Since(start)
	b.StopTimer()
	for name, pid := range pids {
		used := procCPUTime(b, pid) - before[name]
		b.ReportMetric(float64(used)/1e3/float64(b.N), name+"-cpu-µs/msg")
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
}

func publishStamped(b *testing.B, pub *V5, topic string, qos byte) {
	payload := make([]byte, 64)
	binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := pub.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	if err != nil || (qos > 0 && r.ReasonCode >= 0x80) {
		b.Errorf("publish: %v %+v", err, r)
	}
}

func waitDone(b *testing.B, done chan struct{}, received *atomic.Int64, n int) {
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("received %d of %d", received.Load(), n)
	}
}

// procCPUTime is utime+stime of pid in nanoseconds (/proc/<pid>/stat).
func procCPUTime(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + st) * int64(time.Second/100) // USER_HZ
}
