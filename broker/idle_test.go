package broker

import (
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"
)

// TestIdleConnectionMemory bounds the heap an idle connection costs in the
// broker (real sockets, CONNECT and CONNACK, then nothing): it fails when a
// change makes every connection hold more, as mochi's default 2 KiB read
// buffer did (8,050 bytes; 7,030 with 1 KiB, idle.go). Both ends of the
// sockets are in this process: the client side's few hundred bytes are in
// the figure. Goroutine stacks are not: see docs/PERFORMANCE.md.
func TestIdleConnectionMemory(t *testing.T) {
	const n = 300
	b := newBroker(t, Options{}, AnonymousPolicy{Allow: true})
	addr := serveDoor(t, b, ConnInfo{Door: DoorTCP})

	// One connection first, so that what the broker sets up once is in
	// the baseline.
	warm := dialIdle(t, addr, "warm")
	defer warm.Close()
	before := heapInUse()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		conns = append(conns, dialIdle(t, addr, "idle-"+strconv.Itoa(i)))
	}
	// The broker side goes on for a moment after the CONNACK is written
	// (hooks after OnSessionEstablished): wait until it counts them all.
	for i := 0; b.Clients() < n+1 && i < 200; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	after := heapInUse()
	// Where it goes: MQTT_TEST_IDLE_HEAPPROFILE=heap.pb go test
	// -memprofilerate=1 -run TestIdleConnectionMemory ./broker/, then go
	// tool pprof -sample_index=inuse_space -top heap.pb.
	if p := os.Getenv("MQTT_TEST_IDLE_HEAPPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	per := float64(after-before) / n
	t.Logf("heap per idle connection: %.0f bytes", per)
	const budget = 7680 // 7.5 KiB
	if per > budget {
		t.Errorf("an idle connection holds %.0f bytes of heap, more than the budget of %d", per, budget)
	}
}

// dialIdle opens an MQTT 3.1.1 connection (clean session, no keepalive)
// and reads its CONNACK.
func dialIdle(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pk := []byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, byte(len(id))}
	pk = append(pk, id...)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(pk); err != nil {
		t.Fatal(err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack != [4]byte{0x20, 2, 0, 0} {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
