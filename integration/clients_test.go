package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// Doors are the four ways into the broker.
var Doors = []string{"tcp", "tls", "ws", "wss"}

// URL is the door's address in the form paho.mqtt.golang and mosquitto use.
func (c *Caddy) URL(door string) string {
	switch door {
	case "tcp":
		return fmt.Sprintf("tcp://127.0.0.1:%d", c.Ports.TCP)
	case "tls":
		return fmt.Sprintf("ssl://localhost:%d", c.Ports.TLS)
	case "ws":
		return fmt.Sprintf("ws://localhost:%d/mqtt", c.Ports.HTTP)
	case "wss":
		return fmt.Sprintf("wss://localhost:%d/mqtt", c.Ports.HTTPS)
	}
	panic("unknown door " + door)
}

// TLSConfig trusts only the internal CA and checks the name localhost.
func (c *Caddy) TLSConfig(alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: c.RootPool(), ServerName: "localhost", NextProtos: alpn}
}

// Dial opens a raw connection through a door, ready for MQTT bytes.
func (c *Caddy) Dial(t testing.TB, door string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch door {
	case "tcp":
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TCP), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return conn
	case "tls":
		d := tls.Dialer{Config: c.TLSConfig("mqtt")}
		conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TLS))
		if err != nil {
			t.Fatal(err)
		}
		return conn
	case "ws", "wss":
		ws, _, err := websocket.Dial(ctx, c.URL(door), &websocket.DialOptions{
			Subprotocols: []string{"mqtt"},
			HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLSConfig()}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if ws.Subprotocol() != "mqtt" {
			t.Fatalf("subprotocol %q, want mqtt", ws.Subprotocol())
		}
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	}
	t.Fatalf("unknown door %s", door)
	return nil
}

// lockedConn lets paho.golang write a packet's pieces without another
// goroutine's packet in between: it locks a conn that is a sync.Locker around
// its multi-buffer writes, and only a TCP socket writes those in one piece.
type lockedConn struct {
	net.Conn
	sync.Mutex
}

// V5 is an MQTT 5 client (paho.golang) connected through one door.
type V5 struct {
	*paho.Client
	Door       string
	Raw        net.Conn // the network connection, to drop it abruptly
	Msgs       chan *paho.Publish
	Disconnect chan *paho.Disconnect
	Lost       atomic.Bool
	// SessionPresent is the CONNACK's.
	SessionPresent bool
}

// ConnectV5 connects an MQTT 5 client through door.
func (c *Caddy) ConnectV5(t testing.TB, door, id string, mod ...func(*paho.Connect)) *V5 {
	t.Helper()
	return connectV5Over(t, c.Dial(t, door), door, id, mod...)
}

// connectV5Over runs an MQTT 5 client over an established connection.
func connectV5Over(t testing.TB, conn net.Conn, door, id string, mod ...func(*paho.Connect)) *V5 {
	t.Helper()
	v := &V5{Door: door, Raw: &lockedConn{Conn: conn}, Msgs: make(chan *paho.Publish, 10000), Disconnect: make(chan *paho.Disconnect, 1)}
	v.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     v.Raw,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				v.Msgs <- pr.Packet
				return true, nil
			},
		},
		OnServerDisconnect: func(d *paho.Disconnect) { v.Disconnect <- d },
		OnClientError:      func(error) { v.Lost.Store(true) },
	})
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}
	for _, m := range mod {
		m(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := v.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("v5 connect via %s: %v", door, err)
	}
	if ca.ReasonCode != 0 {
		t.Fatalf("v5 connect via %s: reason %#x", door, ca.ReasonCode)
	}
	v.SessionPresent = ca.SessionPresent
	t.Cleanup(func() { _ = v.Client.Disconnect(&paho.Disconnect{}) })
	return v
}

// Subscribe subscribes and checks the grant.
func (v *V5) Subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := v.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		t.Fatalf("subscribe via %s: %v", v.Door, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] != qos {
		t.Fatalf("subscribe via %s: reasons %v", v.Door, sa.Reasons)
	}
}

// Publish publishes and waits for the acknowledgement at QoS 1 and 2.
func (v *V5) Publish(t testing.TB, topic string, qos byte, retain bool, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := v.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: payload})
	if err != nil {
		t.Fatalf("publish via %s: %v", v.Door, err)
	}
	if qos > 0 && resp.ReasonCode >= 0x80 {
		t.Fatalf("publish via %s: reason %#x", v.Door, resp.ReasonCode)
	}
}

// V3 is an MQTT 3.1.1 client (paho.mqtt.golang) connected through one door.
type V3 struct {
	pahov3.Client
	Door string
	Msgs chan pahov3.Message
	Lost atomic.Bool
}

// ConnectV3 connects an MQTT 3.1.1 client through door.
func (c *Caddy) ConnectV3(t testing.TB, door, id string, mod ...func(*pahov3.ClientOptions)) *V3 {
	t.Helper()
	v := &V3{Door: door, Msgs: make(chan pahov3.Message, 10000)}
	opts := pahov3.NewClientOptions().
		AddBroker(c.URL(door)).
		SetClientID(id).
		SetProtocolVersion(4).
		SetTLSConfig(c.TLSConfig()).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(true).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { v.Msgs <- m }).
		SetConnectionLostHandler(func(pahov3.Client, error) { v.Lost.Store(true) })
	for _, m := range mod {
		m(opts)
	}
	v.Client = pahov3.NewClient(opts)
	if tok := v.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 connect via %s: %v", door, tok.Error())
	}
	t.Cleanup(func() { v.Client.Disconnect(100) })
	return v
}

// Subscribe subscribes and checks the grant.
func (v *V3) Subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := v.Client.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 subscribe via %s: %v", v.Door, tok.Error())
	}
	if got := tok.(*pahov3.SubscribeToken).Result()[filter]; got != qos {
		t.Fatalf("v3 subscribe via %s: granted %d", v.Door, got)
	}
}

// Publish publishes and waits for the acknowledgement at QoS 1 and 2.
func (v *V3) Publish(t testing.TB, topic string, qos byte, retain bool, payload []byte) {
	t.Helper()
	tok := v.Client.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 publish via %s: %v", v.Door, tok.Error())
	}
}
