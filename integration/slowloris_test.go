package integration

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// raiseFileLimit lifts this process's soft RLIMIT_NOFILE to its hard limit;
// Caddy, started afterwards, inherits it. It fails the test when fewer than
// need descriptors are possible.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		old := lim.Cur
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: old, Max: lim.Max})
		})
	}
	if lim.Cur < need {
		t.Skipf("RLIMIT_NOFILE hard limit %d, this test needs %d", lim.Max, need)
	}
}

// TestSlowloris opens 5,000 TCP connections that never send CONNECT. While
// they are all open, a normal client must still connect within 2 s and get a
// round trip; every one of them is closed by the server once the CONNECT
// timeout (5 s here) has passed, and their goroutines are gone.
func TestSlowloris(t *testing.T) {
	const (
		n              = 5000
		connectTimeout = 5 * time.Second
	)
	raiseFileLimit(t, n+1000)
	c := startCaddy(t, fmt.Sprintf("connect_timeout %v", connectTimeout))
	baseline := c.Goroutines(ownGoroutines)
	rss0 := c.RSS()

	addr := fmt.Sprintf("127.0.0.1:%d", c.Ports.TCP)
	conns := make([]net.Conn, n)
	opened := make([]time.Time, n)
	var wg sync.WaitGroup
	var failed sync.Once
	start := time.Now()
	const dialers = 8
	for g := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += dialers {
				conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					failed.Do(func() { t.Errorf("dial %d: %v", i, err) })
					return
				}
				conns[i], opened[i] = conn, time.Now()
			}
		}()
	}
	wg.Wait()
	dialed := time.Since(start)
	t.Cleanup(func() {
		for _, conn := range conns {
			if conn != nil {
				conn.Close()
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d silent connections opened in %v", n, dialed.Round(time.Millisecond))
	if dialed > connectTimeout/2 {
		t.Fatalf("opening took %v: the first ones may already be timed out, the test proves little", dialed)
	}

	// All of them are being served (waiting for CONNECT) right now, once
	// Caddy has accepted them all: give it until a second before the first
	// ones time out.
	serving := c.Goroutines(`broker\.\(\*Broker\)\.Serve`)
	for serving < n/2 && time.Since(start) < connectTimeout-time.Second {
		time.Sleep(100 * time.Millisecond)
		serving = c.Goroutines(`broker\.\(\*Broker\)\.Serve`)
	}
	t.Logf("broker sessions while silent sockets are open: %d; caddy RSS %d MiB -> %d MiB",
		serving, rss0>>20, c.RSS()>>20)
	if serving < n/2 {
		t.Errorf("only %d sessions in the broker, want about %d", serving, n)
	}

	// A normal client gets in and through in time.
	before := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		v := c.ConnectV5(t, "tcp", "slowloris-normal")
		v.Subscribe(t, "slowloris/normal", 1)
		v.Publish(t, "slowloris/normal", 1, false, []byte("hello"))
		select {
		case <-v.Msgs:
		case <-time.After(5 * time.Second):
			t.Error("normal client got nothing back")
		}
		_ = v.Client.Disconnect(&paho.Disconnect{})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("normal client not served within 10 s")
	}
	took := time.Since(before)
	t.Logf("normal client connected and round-tripped in %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("normal client needed %v, want under 2 s", took)
	}

	// Every silent connection is closed by the server, not before the
	// CONNECT timeout and not long after.
	early := 0
	var last time.Time
	for i, conn := range conns {
		_ = conn.SetReadDeadline(opened[i].Add(connectTimeout + 5*time.Second))
		_, err := conn.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d still open %v after it was opened", i, connectTimeout+5*time.Second)
		}
		if err == nil {
			t.Fatalf("connection %d: server sent data to a client that sent nothing", i)
		}
		now := time.Now()
		if now.Sub(opened[i]) < connectTimeout-200*time.Millisecond {
			early++
		}
		if now.After(last) {
			last = now
		}
		conn.Close()
		conns[i] = nil
	}
	t.Logf("all %d closed; the last read returned %v after the last dial", n, last.Sub(start.Add(dialed)).Round(time.Millisecond))
	if early > 0 {
		t.Errorf("%d connections closed before the %v CONNECT timeout", early, connectTimeout)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		g := c.Goroutines(ownGoroutines)
		if g <= baseline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines matching %q left, baseline %d", g, ownGoroutines, baseline)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("caddy RSS after cleanup: %d MiB", c.RSS()>>20)
	assertServing(t, c)
}
