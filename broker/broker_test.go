package broker

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
)

// testBroker runs a broker whose tcp door is a real loopback listener.
type testBroker struct {
	*Broker
	addr string
}

// newBroker creates a broker that is shut down when the test ends.
func newBroker(t testing.TB, opts Options, p Policy) *Broker {
	t.Helper()
	b, err := New(opts, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	return b
}

func newTestBroker(t *testing.T, opts Options, p Policy) *testBroker {
	t.Helper()
	b := newBroker(t, opts, p)
	return &testBroker{Broker: b, addr: serveDoor(t, b, ConnInfo{Door: DoorTCP})}
}

// serveDoor serves a real loopback listener as one door of b and returns
// its address.
func serveDoor(t testing.TB, b *Broker, info ConnInfo) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = b.Serve(conn, withSocket(conn, info))
			}()
		}
	}()
	return ln.Addr().String()
}

// withSocket gives a plain TCP door its socket, as the layer4 door does, so
// that tests take the direct write path (writer.go); MQTT_TEST_NO_SOCKET=1
// runs them through the writer goroutine only, as TLS and WebSocket doors.
func withSocket(conn net.Conn, info ConnInfo) ConnInfo {
	if info.Door == DoorTCP && os.Getenv("MQTT_TEST_NO_SOCKET") == "" {
		info.Socket = conn
	}
	return info
}

func (tb *testBroker) connect(t *testing.T, id string) (*paho.Client, chan *paho.Disconnect, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	disc := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { disc <- d }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	return c, disc, ca, err
}

func TestConnectDeadline(t *testing.T) {
	tb := newTestBroker(t, Options{ConnectTimeout: 300 * time.Millisecond}, AnonymousPolicy{Allow: true})
	conn, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read: %v, want EOF from the broker closing", err)
	}
	if took := time.Since(start); took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("silent connection closed after %v, want about 300ms", took)
	}
}

func TestAnonymousPolicy(t *testing.T) {
	tb := newTestBroker(t, Options{}, AnonymousPolicy{Allow: false})
	if _, _, ca, err := tb.connect(t, "a"); err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("anonymous with allow_anonymous off: connack %+v err %v, want 0x86", ca, err)
	}
	// A reload's new policy applies to the next CONNECT.
	restore := tb.SetPolicy(AnonymousPolicy{Allow: true})
	if _, _, _, err := tb.connect(t, "b"); err != nil {
		t.Fatalf("after SetPolicy(allow): %v", err)
	}
	restore()
	if _, _, ca, err := tb.connect(t, "c"); err == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("after restore: connack %+v err %v, want 0x86", ca, err)
	}
}

// A config that was replaced by a newer one must not undo the newer
// config's policy when it stops.
func TestRestoreOnlyWhileCurrent(t *testing.T) {
	b, err := New(Options{}, AnonymousPolicy{Allow: false})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	restoreOld := b.SetPolicy(AnonymousPolicy{Allow: true})
	b.SetPolicy(AnonymousPolicy{Allow: false}) // the next config goes live
	restoreOld()                               // the old config stops
	if got := b.Policy().(AnonymousPolicy); got.Allow {
		t.Fatal("old config's restore replaced the newer policy")
	}
}

func TestInlineClientIDRefused(t *testing.T) {
	tb := newTestBroker(t, Options{}, AnonymousPolicy{Allow: true})
	if _, _, ca, err := tb.connect(t, "inline"); err == nil || ca == nil || ca.ReasonCode != 0x85 {
		t.Fatalf("client id inline: connack %+v err %v, want 0x85", ca, err)
	}
}

// TestNoMochiListeners: mochi's Close calls Clients.GetByListener for every
// registered listener, which can deadlock with a client leaving (MOCHI.md
// row 35). The broker registers none; Shutdown disconnects every client
// itself (TestShutdown).
func TestNoMochiListeners(t *testing.T) {
	b := newBroker(t, Options{}, AnonymousPolicy{Allow: true})
	if n := b.Server().Listeners.Len(); n != 0 {
		t.Fatalf("%d mochi listeners registered", n)
	}
}

func TestShutdown(t *testing.T) {
	tb := newTestBroker(t, Options{ConnectTimeout: time.Minute}, AnonymousPolicy{Allow: true})
	c, disc, _, err := tb.connect(t, "v5")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	// A connection that never sends CONNECT, with a CONNECT deadline far
	// beyond the shutdown timeout: shutdown must close it itself.
	silent, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	deadline := time.Now().Add(2 * time.Second)
	for tb.Clients() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := tb.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("shutdown took %v", took)
	}
	wantShuttingDown(t, disc, "v5 client")
	_ = silent.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("pending connection: read %v, want EOF", err)
	}
	if n := tb.Clients(); n != 0 {
		t.Errorf("%d connections still served after shutdown", n)
	}
	// After shutdown the doors are shut.
	a, bconn := net.Pipe()
	defer bconn.Close()
	if err := tb.Serve(a, ConnInfo{Door: DoorTCP}); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after shutdown: %v, want ErrClosed", err)
	}
}

// TestShutdownReachesLateClients: a client that passed OnConnect before
// shutdown began and registers with mochi after shutdown's first look is
// disconnected (0x8B) as soon as it registers, not left until the deadline.
// Here a hook holds the client in OnSessionEstablish (established, not yet
// registered) until shutdown has begun.
func TestShutdownReachesLateClients(t *testing.T) {
	pause := &pauseHook{id: "late", establishing: make(chan struct{}), establish: make(chan struct{})}
	pause.armed.Store(true)
	var release sync.Once
	releaseIt := func() { release.Do(func() { close(pause.establish) }) }
	defer releaseIt()
	b := newBroker(t, Options{Hooks: []mqtt.Hook{pause}}, AnonymousPolicy{Allow: true})
	tb := &testBroker{Broker: b, addr: serveDoor(t, b, ConnInfo{Door: DoorTCP})}

	type result struct {
		c    *paho.Client
		disc chan *paho.Disconnect
		err  error
	}
	connected := make(chan result, 1)
	go func() {
		c, disc, _, err := tb.connect(t, "late")
		connected <- result{c, disc, err}
	}()
	select {
	case <-pause.establishing:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection never reached OnSessionEstablish")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- tb.Shutdown(ctx) }()
	time.Sleep(3 * shutdownSweep) // shutdown has looked, and found nobody
	releaseIt()

	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown still waiting for a client that registered after it began")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	r := <-connected
	if r.err != nil {
		return // closed before its CONNACK: also not left behind
	}
	defer r.c.Disconnect(&paho.Disconnect{})
	wantShuttingDown(t, r.disc, "late v5 client")
}

// wantShuttingDown expects a DISCONNECT with reason 0x8B (Server shutting
// down) on disc within 2 seconds.
func wantShuttingDown(t *testing.T, disc chan *paho.Disconnect, who string) {
	t.Helper()
	select {
	case d := <-disc:
		if d.ReasonCode != 0x8B {
			t.Errorf("%s: DISCONNECT reason %#x, want 0x8B", who, d.ReasonCode)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s got no DISCONNECT", who)
	}
}
