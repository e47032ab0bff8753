package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// These tests run every scenario in a tiny configuration against the real
// caddy-mqtt broker (TCP and TLS doors, in process) and a real mochi server
// (WebSocket, plain and TLS): they check counts, never speed.

// selfSigned writes a certificate for localhost and returns the TLS config
// serving it and the PEM file that verifies it.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, ca
}

// caddyBroker serves the caddy-mqtt broker on a TCP and a TLS loopback
// listener and returns their URLs.
func caddyBroker(t *testing.T, tlsCfg *tls.Config) (tcpURL, sslURL string) {
	t.Helper()
	b, err := broker.New(broker.Options{MaxPacketSize: 1 << 20}, broker.AnonymousPolicy{Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	serve := func(door broker.Door, wrap func(net.Conn) net.Conn) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					c := wrap(c)
					defer c.Close()
					info := broker.ConnInfo{Door: door}
					if tc, ok := c.(*tls.Conn); ok {
						if tc.Handshake() != nil {
							return
						}
						st := tc.ConnectionState()
						info.TLS = &st
					}
					_ = b.Serve(c, info)
				}()
			}
		}()
		return ln.Addr().String()
	}
	tcpURL = "tcp://" + serve(broker.DoorTCP, func(c net.Conn) net.Conn { return c })
	sslURL = "ssl://" + serve(broker.DoorTLS, func(c net.Conn) net.Conn { return tls.Server(c, tlsCfg) })
	return
}

// mochiWS runs mochi with a WebSocket listener, plain or over TLS.
func mochiWS(t *testing.T, tlsCfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := mqtt.New(&mqtt.Options{InlineClient: false})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr, TLSConfig: tlsCfg})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for i := 0; i < 100; i++ { // the listener starts in a goroutine
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if tlsCfg != nil {
		return "wss://" + addr + "/mqtt"
	}
	return "ws://" + addr + "/mqtt"
}

func TestScenariosCount(t *testing.T) {
	tlsCfg, ca := selfSigned(t)
	tcpURL, sslURL := caddyBroker(t, tlsCfg)
	wsURL, wssURL := mochiWS(t, nil), mochiWS(t, tlsCfg)
	base := options{cafile: ca, serverName: "localhost", size: 64, duration: 10 * time.Second, count: 100,
		window: 1000, inflight: 20, batch: 16, drain: 20 * time.Second, connTO: 20 * time.Second,
		conc: 8, settle: time.Second, pid: os.Getpid()}
	type tc struct {
		name string
		set  func(o *options)
	}
	tests := []tc{
		{"throughput qos0 64B tcp", func(o *options) { o.url, o.scenario, o.size = tcpURL, "throughput", 64 }},
		{"throughput qos1 4KiB tcp", func(o *options) { o.url, o.scenario, o.qos, o.size = tcpURL, "throughput", 1, 4096 }},
		{"throughput qos2 64KiB tcp", func(o *options) {
			o.url, o.scenario, o.qos, o.size, o.count, o.pubs, o.subs = tcpURL, "throughput", 2, 65536, 10, 1, 2
		}},
		{"throughput qos1 ssl", func(o *options) { o.url, o.scenario, o.qos, o.size = sslURL, "throughput", 1, 4096 }},
		{"throughput qos0 ws", func(o *options) { o.url, o.scenario, o.size = wsURL, "throughput", 4096 }},
		{"throughput qos2 wss", func(o *options) { o.url, o.scenario, o.qos, o.size = wssURL, "throughput", 2, 64 }},
		{"latency tcp", func(o *options) { o.url, o.scenario, o.rate, o.duration = tcpURL, "latency", 200, 500*time.Millisecond }},
		{"fanout tcp", func(o *options) { o.url, o.scenario, o.subs, o.count = tcpURL, "fanout", 50, 20 }},
		{"fanin ssl", func(o *options) { o.url, o.scenario, o.pubs, o.count = sslURL, "fanin", 30, 5 }},
		{"idle tcp", func(o *options) { o.url, o.scenario, o.conns = tcpURL, "idle", 40 }},
		{"idle wss", func(o *options) { o.url, o.scenario, o.conns = wssURL, "idle", 20 }},
		{"idle active tcp", func(o *options) { o.url, o.scenario, o.conns, o.active = tcpURL, "idle", 40, true }},
		{"idle active ws", func(o *options) { o.url, o.scenario, o.conns, o.active = wsURL, "idle", 20, true }},
		{"connect ssl", func(o *options) { o.url, o.scenario, o.conns = sslURL, "connect", 30 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.set(&o)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := run(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK || res.Delivered != res.Expected || res.Errors != 0 {
				t.Fatalf("not OK: %+v", *res)
			}
			switch o.scenario {
			case "throughput", "fanout", "fanin":
				if want := int64(o.count) * int64(res.Pubs); res.Sent != want {
					t.Errorf("sent %d, want %d", res.Sent, want)
				}
				if res.Expected != res.Sent*int64(res.Subs) {
					t.Errorf("expected %d for %d sent to %d subscribers", res.Expected, res.Sent, res.Subs)
				}
			case "latency":
				if res.P50us <= 0 || res.P99us < res.P50us || res.P999us < res.P99us {
					t.Errorf("percentiles out of order: %+v", *res)
				}
			case "idle":
				if res.Conns != o.conns || res.RSSAfterKB <= 0 {
					t.Errorf("idle: %+v", *res)
				}
			case "connect":
				if res.Conns != o.conns || res.ConnsPerSec <= 0 {
					t.Errorf("connect: %+v", *res)
				}
			}
		})
	}
}

// A run whose messages do not all arrive must say so: with no subscriber
// at all, the 50 messages sent are expected once each and never delivered.
func TestLossIsReported(t *testing.T) {
	tcpURL, _ := caddyBroker(t, nil)
	tgt, err := parseTarget(tcpURL, "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig{pubs: 1, subs: 0, size: 64, duration: 5 * time.Second, count: 50, window: 1000,
		inflight: 20, batch: 16, drain: 2 * time.Second, connTO: 10 * time.Second}
	lr, err := runLoad(context.Background(), tgt, cfg, "lossy")
	if err != nil {
		t.Fatal(err)
	}
	if lr.sent != 50 || lr.delivered != 0 || lr.expected != 50 {
		t.Fatalf("sent %d delivered %d expected %d; want 50, 0, 50", lr.sent, lr.delivered, lr.expected)
	}
}
