package caddymqtt

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// FuzzWebSocketDoor sends arbitrary bytes, cut into arbitrary binary
// WebSocket frames, through a real loopback WebSocket into the
// http.handlers.mqtt handler and a real broker. data is the byte stream; each
// byte of cuts is the length of the next frame (0 sends an empty frame), and
// what is left after the cuts goes in one last frame. When the input ends the
// client hangs up: the session must end within 2 s, nothing may panic, and
// no goroutine may be left behind.
//
// The seed corpus in testdata/fuzz/FuzzWebSocketDoor holds valid sessions
// (CONNECT, SUBSCRIBE, PUBLISH for MQTT 3.1.1 and 5) cut at every byte,
// several packets per frame, and broken ones.
func FuzzWebSocketDoor(f *testing.F) {
	_, url, ended := newWebSocketDoor(f, broker.Options{
		ConnectTimeout: 2 * time.Second,
		MaxPacketSize:  64 << 10,
		Logger:         slog.New(slog.DiscardHandler),
	}, nil)

	for _, s := range seedSessions() {
		f.Add(s, []byte{})
	}

	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		before := runtime.NumGoroutine()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			t.Fatal(err)
		}
		ws.SetReadLimit(-1)
		read := make(chan struct{})
		go func() { // what the broker answers is read and dropped
			defer close(read)
			for {
				if _, _, err := ws.Read(ctx); err != nil {
					return
				}
			}
		}()
		for len(data) > 0 || len(cuts) > 0 {
			n := len(data)
			if len(cuts) > 0 {
				n = min(int(cuts[0]), len(data))
				cuts = cuts[1:]
			}
			if err := ws.Write(ctx, websocket.MessageBinary, data[:n]); err != nil {
				break // the broker hung up
			}
			data = data[n:]
		}
		_ = ws.CloseNow()
		<-read

		select {
		case <-ended:
		case <-time.After(2 * time.Second):
			t.Fatal("the handler did not return 2 s after the client hung up")
		}
		// The session runs on a goroutine of its own: it has ended once the
		// goroutines are back to what they were.
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines, %d before the session:\n%s",
					runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// newWebSocketDoor serves the http.handlers.mqtt handler, in front of a new
// broker, on a loopback httptest server; both are closed when the test ends.
// It returns the broker, the server's ws:// URL and a channel that receives
// once each time the handler returns. A request that is not a WebSocket upgrade gets
// 400 from the next handler.
func newWebSocketDoor(t testing.TB, opts broker.Options, policy broker.Policy) (*broker.Broker, string, <-chan struct{}) {
	t.Helper()
	b, err := broker.New(opts, policy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	h := &Handler{app: &App{shared: &sharedBroker{b: b}}, logger: zap.NewNop()}
	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { returned <- struct{}{} }()
		_ = h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
			http.Error(w, "not a websocket", http.StatusBadRequest)
			return nil
		}))
	}))
	t.Cleanup(srv.Close)
	return b, "ws" + strings.TrimPrefix(srv.URL, "http"), returned
}

// seedSessions are byte streams of whole MQTT sessions, for the seed corpus.
func seedSessions() [][]byte {
	str := func(b []byte, s string) []byte {
		return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
	}
	packet := func(first byte, body []byte) []byte {
		out := []byte{first}
		n := len(body)
		for {
			d := byte(n % 128)
			n /= 128
			if n > 0 {
				d |= 0x80
			}
			out = append(out, d)
			if n == 0 {
				break
			}
		}
		return append(out, body...)
	}
	var seeds [][]byte
	for _, v := range []byte{4, 5} {
		props := func(b []byte) []byte {
			if v == 5 {
				return append(b, 0)
			}
			return b
		}
		connect := str(nil, "MQTT")
		connect = append(connect, v, 0x02, 0, 30)
		connect = props(connect)
		connect = packet(0x10, str(connect, "fuzz"))
		sub := props(binary.BigEndian.AppendUint16(nil, 1))
		sub = packet(0x82, append(str(sub, "fuzz/#"), 1))
		pub0 := packet(0x30, append(props(str(nil, "fuzz/a")), "hello"...))
		pub1 := str(nil, "fuzz/b")
		pub1 = props(binary.BigEndian.AppendUint16(pub1, 2))
		pub1 = packet(0x32, append(pub1, "world"...))
		disconnect := []byte{0xe0, 0}
		var session []byte
		for _, p := range [][]byte{connect, sub, pub0, pub1, {0xc0, 0}, disconnect} {
			session = append(session, p...)
		}
		seeds = append(seeds, session, append(append([]byte{}, connect...), pub0...))
	}
	return seeds
}
