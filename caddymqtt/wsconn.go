package caddymqtt

import (
	"net"
	"sync"
)

// wsConn is the net.Conn the broker reads a WebSocket session through. Its
// Close starts the WebSocket closing handshake and returns at once.
// coder/websocket's net.Conn waits for the peer's close frame, up to 5 s to
// write ours and 5 s to read theirs; the broker closes connections on the
// goroutine of whoever ends the session, so a peer that is gone or does not
// read delayed, for example, the CONNACK of the client taking its session
// over by 5 s. The handshake goroutine ends by itself within those 10 s.
type wsConn struct {
	net.Conn
	once sync.Once
}

func (c *wsConn) Close() error {
	c.once.Do(func() { go func() { _ = c.Conn.Close() }() })
	return nil
}
