package caddymqtt

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// TestWebSocketHandlerReturnsWhileSessionRuns: once the connection is
// upgraded (hijacked), the HTTP handler returns and the MQTT session goes on
// without it. A handler that served the session itself kept Caddy's whole
// middleware chain on the stack of every idle WebSocket connection (32 KB
// each). The session must still answer after the handler has returned, and
// end when the client hangs up.
func TestWebSocketHandlerReturnsWhileSessionRuns(t *testing.T) {
	b, url, returned := newWebSocketDoor(t, broker.Options{
		ConnectTimeout: 2 * time.Second,
		Logger:         slog.New(slog.DiscardHandler),
	}, &broker.AuthPolicy{AllowAnonymous: true})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()

	exchange := func(send, want []byte) {
		t.Helper()
		if err := ws.Write(ctx, websocket.MessageBinary, send); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("sent % x, got % x, want % x", send, got, want)
		}
	}
	// MQTT 3.1.1 CONNECT, clean session, client id "h", keepalive 60 s.
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'h'}
	exchange(connect, []byte{0x20, 2, 0, 0}) // CONNACK, accepted

	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("the HTTP handler still runs the session 5 s after the CONNACK")
	}
	exchange([]byte{0xC0, 0}, []byte{0xD0, 0}) // PINGREQ, PINGRESP: still served

	if b.Clients() != 1 {
		t.Fatalf("broker has %d clients, want 1", b.Clients())
	}
	_ = ws.CloseNow()
	deadline := time.Now().Add(5 * time.Second)
	for b.Clients() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session did not end 5 s after the client hung up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
