package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// gracefulFileLimit lifts this process's soft limit on open files to the hard
// limit; Caddy, started from here, inherits it.
func gracefulFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Skipf("open file limit %d, need %d", lim.Cur, need)
	}
}

// rawConnectV3 is the smallest MQTT 3.1.1 CONNECT: clean session, the given
// client id, keepalive 300 s.
func rawConnectV3(id string) []byte {
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0x01, 0x2c, byte(len(id) >> 8), byte(len(id))}
	body = append(body, id...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// TestStopWith10kClients: 10,000 MQTT 3.1.1 clients (raw sockets, one
// CONNECT each) plus MQTT 5 clients on every door; `caddy stop` returns in
// under 5 s, the MQTT 5 clients get DISCONNECT 0x8B, every raw socket is
// closed by the server, and after a restart the persistent session, its
// subscription and the retained message are back from storage.
func TestStopWith10kClients(t *testing.T) {
	const n = 10000
	gracefulFileLimit(t, n+1000)
	c := startCaddy(t, "storage bolt")

	// State that must come back after the stop.
	keeper := persistentV5(c, t, "tcp", "graceful-keeper")
	keeper.Subscribe(t, "graceful/#", 1)
	pub := c.ConnectV5(t, "tcp", "graceful-pub")
	pub.Publish(t, "graceful/retained", 1, true, []byte("still here"))
	if _, _, ok := keeper.next(5 * time.Second); !ok {
		t.Fatal("keeper did not get the retained publish")
	}

	var samples []*V5
	for _, door := range Doors {
		samples = append(samples, c.ConnectV5(t, door, "graceful-v5-"+door))
	}

	start := time.Now()
	conns := make([]net.Conn, n)
	var failed atomic.Int32
	var wg sync.WaitGroup
	const workers = 64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TCP), 10*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				conns[i] = conn
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				ack := make([]byte, 4)
				if _, err := conn.Write(rawConnectV3(fmt.Sprintf("g%05d", i))); err != nil {
					failed.Add(1)
					continue
				}
				if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
					failed.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, conn := range conns {
			if conn != nil {
				conn.Close()
			}
		}
	})
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d raw clients failed to connect", f, n)
	}
	t.Logf("%d raw MQTT 3.1.1 clients connected in %v; caddy RSS %d MiB", n, time.Since(start), c.RSS()>>20)

	took := c.Stop()
	t.Logf("caddy stop with %d clients took %v", n+len(samples)+2, took)
	if took > 5*time.Second {
		t.Errorf("caddy stop took %v, want under 5s", took)
	}
	for _, v := range samples {
		select {
		case d := <-v.Disconnect:
			if d.ReasonCode != 0x8B {
				t.Errorf("v5 on %s: DISCONNECT reason %#x, want 0x8B", v.Door, d.ReasonCode)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("v5 on %s: no DISCONNECT from the server", v.Door)
		}
	}
	// MQTT 3.1.1 has no server DISCONNECT: each raw socket sees EOF.
	open := 0
	for _, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := bufio.NewReader(conn).ReadByte(); err != io.EOF {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
			}
		}
	}
	if open > 0 {
		t.Errorf("%d raw clients still open after caddy stop", open)
	}

	c.Restart()
	keeper = persistentV5(c, t, "tcp", "graceful-keeper")
	pub = c.ConnectV5(t, "tcp", "graceful-pub")
	pub.Publish(t, "graceful/after", 1, false, []byte("after restart"))
	topic, payload, ok := keeper.next(5 * time.Second)
	if !ok || topic != "graceful/after" || payload != "after restart" {
		t.Fatalf("persistent subscription after restart: %q %q %v", topic, payload, ok)
	}
	reader := c.ConnectV5(t, "ws", "graceful-reader")
	reader.Subscribe(t, "graceful/retained", 1)
	if topic, payload, ok := reader.next(5 * time.Second); !ok || payload != "still here" {
		t.Fatalf("retained after restart: %q %q %v", topic, payload, ok)
	}
}

// TestSIGTERMDrains: SIGTERM (what systemd and docker stop send) drains like
// `caddy stop`: MQTT 5 clients get DISCONNECT 0x8B, Caddy exits within 5 s,
// and persistent state is back after a restart.
func TestSIGTERMDrains(t *testing.T) {
	c := startCaddy(t, "storage bolt")
	keeper := persistentV5(c, t, "tls", "sigterm-keeper")
	keeper.Subscribe(t, "sigterm/#", 1)
	v5 := c.ConnectV5(t, "wss", "sigterm-v5")

	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("caddy still running 10 s after SIGTERM")
	}
	took := time.Since(start)
	t.Logf("exit after SIGTERM took %v", took)
	if took > 5*time.Second {
		t.Errorf("exit after SIGTERM took %v, want under 5s", took)
	}
	for _, v := range []*V5{keeper, v5} {
		select {
		case d := <-v.Disconnect:
			if d.ReasonCode != 0x8B {
				t.Errorf("%s: DISCONNECT reason %#x, want 0x8B", v.Door, d.ReasonCode)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("%s: no DISCONNECT from the server", v.Door)
		}
	}

	c.Restart()
	keeper = persistentV5(c, t, "tls", "sigterm-keeper")
	c.ConnectV5(t, "tcp", "sigterm-pub").Publish(t, "sigterm/x", 1, false, []byte("back"))
	if _, payload, ok := keeper.next(5 * time.Second); !ok || payload != "back" {
		t.Fatalf("subscription after SIGTERM and restart: %q %v", payload, ok)
	}
}

// TestStopWithStalledSubscriber: an MQTT 5 subscriber that stopped reading
// (its socket buffers full, the broker's write to it blocked) does not hold
// up `caddy stop`.
func TestStopWithStalledSubscriber(t *testing.T) {
	c := startCaddy(t, "")
	stalled := c.Dial(t, "tcp")
	defer stalled.Close()
	id := "stalled"
	connect := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0x01, 0x2c, 0, 0, byte(len(id))}
	connect = append(connect, id...)
	subscribe := []byte{0x82, 0, 0, 1, 0, 0, 7, 's', 't', 'a', 'l', 'l', '/', '#', 0}
	subscribe[1] = byte(len(subscribe) - 2)
	if _, err := stalled.Write(append(append([]byte{0x10, byte(len(connect))}, connect...), subscribe...)); err != nil {
		t.Fatal(err)
	}
	// Read CONNACK and SUBACK, then never read again.
	_ = stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	head := make([]byte, 2)
	for i := 0; i < 2; i++ {
		if _, err := io.ReadFull(stalled, head); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(stalled, make([]byte, head[1])); err != nil {
			t.Fatal(err)
		}
	}
	pub := c.ConnectV5(t, "tcp", "stall-pub")
	payload := make([]byte, 32<<10)
	for i := 0; i < 600; i++ { // ~19 MiB, more than the socket buffers hold
		pub.Publish(t, "stall/x", 0, false, payload)
	}
	time.Sleep(500 * time.Millisecond)
	other := c.ConnectV5(t, "ws", "stall-other")

	took := c.Stop()
	t.Logf("caddy stop with a stalled subscriber took %v", took)
	if took > 5*time.Second {
		t.Errorf("caddy stop took %v, want under 5s", took)
	}
	select {
	case d := <-other.Disconnect:
		if d.ReasonCode != 0x8B {
			t.Errorf("other client: DISCONNECT %#x, want 0x8B", d.ReasonCode)
		}
	case <-time.After(2 * time.Second):
		t.Error("other client: no DISCONNECT")
	}
}
