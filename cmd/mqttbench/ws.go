package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The generator's WebSocket client is gorilla/websocket (already in the
// module for mochi's own WebSocket listener, which cmd/mqttbench/mochiserver
// runs), not coder/websocket as in the broker, because a client must mask
// every frame: coder/websocket masks through a fixed 4 KiB bufio.Writer and so
// writes a 64 KiB batch of publishes in 16 system calls, where gorilla masks
// the message in a write buffer of the size we give it and writes it in one.
// That was half of the generator's CPU per message over ws:// at 4 KiB, and it
// runs on the two cores it measures the broker on (docs/PERFORMANCE.md).

// wsWriteBufferSize holds one publisher batch (64 KiB plus the message that
// crossed it, up to a 64 KiB payload), so a batch leaves as one frame.
const wsWriteBufferSize = 160 << 10

// wsWriteBuffers lends the write buffer to a connection only while it writes
// a message, so idle connections (the idle scenario, 19k of them) hold none.
var wsWriteBuffers sync.Pool

// dialWS opens a WebSocket connection with the subprotocol mqtt and returns it
// as a net.Conn that carries the MQTT byte stream in binary messages.
func (t *target) dialWS(ctx context.Context) (net.Conn, error) {
	d := &websocket.Dialer{
		// Every connection is dialled to the given address, so that a host
		// name (for SNI and Host) need not resolve to it.
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, t.addr)
		},
		TLSClientConfig: t.tls,
		Subprotocols:    []string{"mqtt"},
		WriteBufferSize: wsWriteBufferSize,
		WriteBufferPool: &wsWriteBuffers,
	}
	var header http.Header
	if t.host != "" {
		header = http.Header{"Host": {t.host}}
	}
	ws, resp, err := d.DialContext(ctx, t.url, header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, err
	}
	if ws.Subprotocol() != "mqtt" {
		ws.Close()
		return nil, fmt.Errorf("%s: the server chose subprotocol %q, not mqtt", t.url, ws.Subprotocol())
	}
	ws.SetReadLimit(maxPacket)
	return &wsNetConn{ws: ws}, nil
}

// wsNetConn is a gorilla WebSocket connection as a net.Conn: each Write is one
// binary message, Read reads the messages' payloads as one stream.
type wsNetConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex // gorilla allows one writer at a time; publishers' readers write PUBREL

	r   io.Reader // the message being read
	err error     // a failed read is final: gorilla panics on reading on after one
}

func (c *wsNetConn) Read(p []byte) (int, error) {
	for c.err == nil {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					err = io.EOF
				}
				c.err = err
				break
			}
			if typ != websocket.BinaryMessage {
				c.err = errors.New("websocket: a text message; MQTT travels in binary messages")
				break
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		if err != nil {
			c.err = err
		}
		return n, err
	}
	return 0, c.err
}

func (c *wsNetConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsNetConn) Close() error                       { return c.ws.Close() }
func (c *wsNetConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsNetConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsNetConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsNetConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
func (c *wsNetConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
