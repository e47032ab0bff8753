package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"
)

// target is a parsed broker address: tcp://, ssl://, ws:// or wss://.
type target struct {
	scheme string // tcp, ssl, ws, wss
	addr   string // host:port
	url    string // for ws/wss
	host   string // Host header for ws/wss: --servername with the URL's port
	tls    *tls.Config
}

func parseTarget(raw, cafile, serverName string, insecure bool) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	t := &target{scheme: u.Scheme, addr: u.Host}
	switch u.Scheme {
	case "tcp", "mqtt", "ws":
		t.scheme = map[string]string{"tcp": "tcp", "mqtt": "tcp", "ws": "ws"}[u.Scheme]
	case "ssl", "tls", "mqtts", "wss":
		if u.Scheme != "wss" {
			t.scheme = "ssl"
		}
		cfg := &tls.Config{InsecureSkipVerify: insecure, ServerName: u.Hostname(),
			ClientSessionCache: nil} // every handshake is a full one
		if serverName != "" {
			cfg.ServerName = serverName
		}
		if cafile != "" {
			pem, err := os.ReadFile(cafile)
			if err != nil {
				return nil, err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: no PEM certificate", cafile)
			}
		}
		t.tls = cfg
	default:
		return nil, fmt.Errorf("%s: scheme must be tcp, ssl, ws or wss", raw)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("%s: no port", raw)
	}
	if t.scheme == "ws" || t.scheme == "wss" {
		path := u.Path
		if path == "" {
			path = "/mqtt"
		}
		t.url = t.scheme + "://" + u.Host + path
		if serverName != "" {
			t.host = net.JoinHostPort(serverName, u.Port())
		}
	}
	return t, nil
}

// dial opens one transport connection (no MQTT yet).
func (t *target) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	switch t.scheme {
	case "tcp":
		return d.DialContext(ctx, "tcp", t.addr)
	case "ssl":
		c, err := d.DialContext(ctx, "tcp", t.addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, t.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	default:
		return t.dialWS(ctx)
	}
}

// mqttConn is one MQTT connection of the generator.
type mqttConn struct {
	net.Conn
	r    *bufio.Reader
	rbuf []byte
	wbuf []byte
}

const maxPacket = 1 << 21

// connect dials and completes CONNECT/CONNACK within timeout.
func (t *target) connect(ctx context.Context, id string, timeout time.Duration) (*mqttConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	mc := &mqttConn{Conn: c, r: bufio.NewReaderSize(c, 16<<10)}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := c.Write(appendConnect(nil, id, 0)); err != nil {
		c.Close()
		return nil, err
	}
	h, body, err := readPacket(mc.r, &mc.rbuf, maxPacket)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	if h>>4 != pktConnack || len(body) < 2 || body[1] != 0 {
		c.Close()
		return nil, fmt.Errorf("CONNECT refused: %x %x", h, body)
	}
	c.SetDeadline(time.Time{})
	return mc, nil
}

// subscribe sends SUBSCRIBE and waits for its SUBACK.
func (c *mqttConn) subscribe(topic string, qos byte, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(appendSubscribe(nil, 1, topic, qos)); err != nil {
		return err
	}
	for {
		h, body, err := readPacket(c.r, &c.rbuf, maxPacket)
		if err != nil {
			return fmt.Errorf("SUBACK: %w", err)
		}
		if h>>4 == pktSuback {
			if len(body) < 3 || body[2] == 0x80 {
				return errors.New("subscription refused")
			}
			return nil
		}
	}
}

// exercise subscribes to topic with QoS 1, publishes one QoS 1 message to
// it and acknowledges its delivery: what a device does before it goes quiet
// (idle --active). A broker may keep more per connection once it has been
// through its subscribe and publish paths than after CONNECT alone.
func (c *mqttConn) exercise(topic string, timeout time.Duration) error {
	if err := c.subscribe(topic, 1, timeout); err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	const payload = "active"
	if _, err := c.Write(append(appendPublishHeader(nil, topic, 1, 2, len(payload)), payload...)); err != nil {
		return err
	}
	for acked, delivered := false, false; !acked || !delivered; {
		h, body, err := readPacket(c.r, &c.rbuf, maxPacket)
		if err != nil {
			return fmt.Errorf("waiting for the PUBACK and the delivery: %w", err)
		}
		switch h >> 4 {
		case pktPuback:
			acked = true
		case pktPublish:
			qos, pid, _, err := parsePublish(h, body)
			if err != nil {
				return err
			}
			if qos > 0 {
				if _, err := c.Write(appendAck(nil, pktPuback, pid)); err != nil {
					return err
				}
			}
			delivered = true
		}
	}
	return nil
}

// closeHard closes without TIME_WAIT on our side for TCP, so that tens of
// thousands of short connections do not exhaust loopback ports.
func closeHard(c net.Conn) {
	if mc, ok := c.(*mqttConn); ok {
		c = mc.Conn
	}
	if wc, ok := c.(*wsNetConn); ok {
		c = wc.ws.UnderlyingConn()
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
