package broker

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

func TestPacketLimitScan(t *testing.T) {
	c := &packetLimitConn{limit: 20}
	// Two small packets (PINGREQ, a 10-byte PUBLISH), fed a byte at a time.
	stream := []byte{0xc0, 0x00, 0x30, 0x08, 0, 3, 'a', '/', 'b', 'x', 'y', 'z'}
	for i := range stream {
		if err := c.scan(stream[i : i+1]); err != nil {
			t.Fatalf("byte %d: %v", i, err)
		}
	}
	// A packet announcing 200 bytes: refused from the header alone.
	if err := c.scan([]byte{0x30, 0xc8, 0x01}); !errors.Is(err, packets.ErrPacketTooLarge) {
		t.Fatalf("oversized header: %v, want ErrPacketTooLarge", err)
	}
	c = &packetLimitConn{limit: 1 << 20}
	if err := c.scan([]byte{0x30, 0xff, 0xff, 0xff, 0xff}); !errors.Is(err, packets.ErrMalformedVariableByteInteger) {
		t.Fatalf("five-byte length: %v", err)
	}
	// A 3-byte length exactly at the limit passes: 1 + 3 + 16380.
	c = &packetLimitConn{limit: 16384}
	if err := c.scan([]byte{0x30, 0xfc, 0xff, 0x00}); err != nil {
		t.Fatalf("packet at the limit: %v", err)
	}
	if c.remaining != 0x3ffc {
		t.Fatalf("remaining %d", c.remaining)
	}
}

func TestRateLimiter(t *testing.T) {
	r := newRateLimiter(3, 3*time.Second)
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if !r.allow("10.0.0.1", now) {
			t.Fatalf("connection %d refused within the burst", i)
		}
	}
	if r.allow("10.0.0.1", now) {
		t.Fatal("fourth connection in the same instant allowed")
	}
	if !r.allow("10.0.0.2", now) {
		t.Fatal("another address was limited too")
	}
	if !r.allow("10.0.0.1", now.Add(time.Second)) {
		t.Fatal("no token after one interval/burst")
	}
	if r.allow("10.0.0.1", now.Add(time.Second)) {
		t.Fatal("two tokens after one interval/burst")
	}
	// Idle addresses are forgotten.
	r.allow("10.0.0.3", now.Add(time.Hour))
	if len(r.buckets) != 1 {
		t.Fatalf("%d buckets kept, want only the active one", len(r.buckets))
	}
	if newRateLimiter(0, time.Second).allow("x", now) != true {
		t.Fatal("a nil limiter must allow")
	}
}

func dialConnect(t *testing.T, addr, id string) (*paho.Client, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, nil
}

func TestDoorMaxConnections(t *testing.T) {
	tb := newTestBroker(t, Options{}, AnonymousPolicy{Allow: true})
	limited := serveDoor(t, tb.Broker, ConnInfo{Door: DoorWS, Limits: DoorLimits{MaxConnections: 2}})
	for i := 0; i < 2; i++ {
		if _, err := dialConnect(t, limited, "d"+string(rune('a'+i))); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	conn, err := net.Dial("tcp", limited)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("third connection on the door: %v, want closed", err)
	}
	// Other doors are not affected.
	if _, err := dialConnect(t, tb.addr, "other-door"); err != nil {
		t.Fatalf("other door: %v", err)
	}
}

func TestDoorMaxPacketSize(t *testing.T) {
	tb := newTestBroker(t, Options{}, AnonymousPolicy{Allow: true})
	small := serveDoor(t, tb.Broker, ConnInfo{Door: DoorWS, Limits: DoorLimits{MaxPacketSize: 128}})
	c, err := dialConnect(t, small, "small")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "t", QoS: 1, Payload: make([]byte, 64)}); err != nil {
		t.Fatalf("small publish: %v", err)
	}
	go func() { _, _ = c.Publish(ctx, &paho.Publish{Topic: "t", QoS: 1, Payload: make([]byte, 512)}) }()
	select {
	case <-c.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("client still connected after a packet over the door's limit")
	}
	// The broker-wide limit still allows it on another door.
	big, err := dialConnect(t, tb.addr, "big")
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if _, err := big.Publish(ctx2, &paho.Publish{Topic: "t", QoS: 1, Payload: make([]byte, 512)}); err != nil {
		t.Fatalf("512-byte publish on the default door: %v", err)
	}
}

func TestMaxSubscriptions(t *testing.T) {
	tb := newTestBroker(t, Options{MaxSubscriptions: 2}, AnonymousPolicy{Allow: true})
	c, err := dialConnect(t, tb.addr, "subs")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "a", QoS: 1}, {Topic: "b/#", QoS: 1}, {Topic: "c", QoS: 1},
	}})
	// paho reports a partly refused SUBSCRIBE as an error with the SUBACK.
	if sa == nil {
		t.Fatal(err)
	}
	if want := []byte{1, 1, 0x87}; string(sa.Reasons) != string(want) {
		t.Fatalf("reasons %x, want %x", sa.Reasons, want)
	}
	// Renewing a held subscription does not count; a new one still does.
	sa, err = c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a", QoS: 0}, {Topic: "d", QoS: 0}}})
	if sa == nil {
		t.Fatal(err)
	}
	if want := []byte{0, 0x87}; string(sa.Reasons) != string(want) {
		t.Fatalf("reasons %x, want %x", sa.Reasons, want)
	}
}

func TestConnectionRate(t *testing.T) {
	tb := newTestBroker(t, Options{MaxConnectionRate: 2, ConnectionRateInterval: time.Minute}, AnonymousPolicy{Allow: true})
	for i := 0; i < 2; i++ {
		if _, err := dialConnect(t, tb.addr, "r"+string(rune('a'+i))); err != nil {
			t.Fatalf("connection %d within the rate: %v", i, err)
		}
	}
	if _, err := dialConnect(t, tb.addr, "over"); err == nil {
		t.Fatal("third connection within the minute was served")
	}
}

// TestMaxClientsCountsSockets: max_connections counts connections that have
// not sent CONNECT yet, as mosquitto's does, so silent sockets cannot pile
// up past it.
func TestMaxClientsCountsSockets(t *testing.T) {
	tb := newTestBroker(t, Options{MaxClients: 2, ConnectTimeout: time.Minute}, AnonymousPolicy{Allow: true})
	silent, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := dialConnect(t, tb.addr, "one"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for tb.Clients() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := dialConnect(t, tb.addr, "three"); err == nil {
		t.Fatal("a third connection was served with max_connections 2")
	}
	silent.Close()
	deadline = time.Now().Add(2 * time.Second)
	for tb.Clients() > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := dialConnect(t, tb.addr, "after"); err != nil {
		t.Fatalf("after the silent socket left: %v", err)
	}
}

// TestMaxSubscriptionsCountsGrantedOnly: a filter the ACL refuses does not
// use up a place under max_subscriptions.
func TestMaxSubscriptionsCountsGrantedOnly(t *testing.T) {
	acl, err := auth.ParseACLFile(strings.NewReader("topic read allowed/#\n"), "acl")
	if err != nil {
		t.Fatal(err)
	}
	tb := newTestBroker(t, Options{MaxSubscriptions: 1}, &AuthPolicy{AllowAnonymous: true, ACL: acl})
	c, err := dialConnect(t, tb.addr, "subs")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "denied/x", QoS: 1}, {Topic: "allowed/y", QoS: 1}, {Topic: "allowed/z", QoS: 1},
	}})
	if sa == nil {
		t.Fatal("no SUBACK")
	}
	if want := []byte{0x87, 1, 0x87}; string(sa.Reasons) != string(want) {
		t.Fatalf("reasons %x, want %x", sa.Reasons, want)
	}
}
