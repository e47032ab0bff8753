package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// limitsTemplate: the tcp door takes the PROXY protocol from 127.0.0.1 and
// refuses anonymous clients; the plain-WebSocket door holds at most two
// connections and small packets.
var limitsTemplate = derive(baseCaddyfile,
	`		127.0.0.1:{{.TCP}} {
			route {
				mqtt
			}
		}`, `		127.0.0.1:{{.TCP}} {
			route {
				proxy_protocol {
					allow 127.0.0.1/32
				}
				mqtt {
					allow_anonymous false
				}
			}
		}`,
	`http://localhost:{{.HTTP}} {
	mqtt /mqtt
`, `http://localhost:{{.HTTP}} {
	mqtt /mqtt {
		max_connections 2
		max_packet_size 1KiB
	}
`)

// TestProxyProtocolClientIP: behind a PROXY-protocol load balancer the
// broker sees the client's address from the PROXY header.
func TestProxyProtocolClientIP(t *testing.T) {
	c := startCaddyWith(t, limitsTemplate, CaddyConfig{Ports: freePorts(t)})
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TCP))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	write(t, conn, []byte(fmt.Sprintf("PROXY TCP4 198.51.100.23 127.0.0.1 40000 %d\r\n", c.Ports.TCP)))
	write(t, conn, connectPacket(5, "behind-lb"))
	if code := readConnack(t, conn); code != 0x86 {
		t.Fatalf("CONNACK %#x, want 0x86 (anonymous refused on this door)", code)
	}
	re := regexp.MustCompile(`"msg":"mqtt connection refused".*"client":"behind-lb".*"remote":"198\.51\.100\.23:40000"`)
	deadline := time.Now().Add(3 * time.Second)
	for !re.MatchString(c.Log()) {
		if time.Now().After(deadline) {
			t.Fatalf("refusal not logged with the PROXY header's address:\n%s", tail(c.Log(), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDoorLimits: a door's own max_connections and max_packet_size apply
// to its clients only.
func TestDoorLimits(t *testing.T) {
	c := startCaddyWith(t, limitsTemplate, CaddyConfig{Ports: freePorts(t)})
	a := c.ConnectV5(t, "ws", "ws-a")
	c.ConnectV5(t, "ws", "ws-b")
	third := c.Dial(t, "ws")
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(3 * time.Second))
	var nerr net.Error
	if _, err := third.Read(make([]byte, 1)); err == nil || (errors.As(err, &nerr) && nerr.Timeout()) {
		t.Fatalf("third WebSocket connection: read %v, want it closed by the door's max_connections", err)
	}
	// The other doors are not limited by it.
	for _, door := range []string{"wss", "tls"} {
		c.ConnectV5(t, door, "other-"+door)
	}

	// 1 KiB on the ws door; the broker's 64 KiB elsewhere.
	a.Publish(t, "small", 1, false, make([]byte, 512))
	wss := c.ConnectV5(t, "wss", "big-wss")
	wss.Publish(t, "big", 1, false, make([]byte, 4096))
	go func() {
		_, _ = a.Client.Publish(context.Background(), &paho.Publish{Topic: "big", Payload: make([]byte, 4096)})
	}()
	select {
	case <-a.Client.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("ws client still connected after a packet over the door's max_packet_size")
	}
}
