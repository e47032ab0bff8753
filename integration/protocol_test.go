package integration

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// protocolConfig: anonymous clients that may not publish to
// test/nosubscribe (they may read test/#), and max_keepalive 10.
const protocolConfig = `max_keepalive 10
		acl {
			topic readwrite test/ok
			topic read test/#
		}`

// mosquittoArgs are the connection arguments of mosquitto_pub for a door
// it can use (it has no WebSocket support).
func mosquittoArgs(c *Caddy, door string) []string {
	if door == "tls" {
		return []string{"-h", "localhost", "-p", fmt.Sprint(c.Ports.TLS), "--cafile", c.RootPath()}
	}
	return []string{"-h", "127.0.0.1", "-p", fmt.Sprint(c.Ports.TCP)}
}

func runMosquittoPub(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

// TestRefusedPublishKeepsConnection: on every door, an MQTT 3.1.1 QoS 1/2
// publish the ACL refuses completes its QoS flow and is dropped, the client
// stays connected (the connection used to be closed, and client libraries
// reconnected and retried in a loop); an MQTT 5 client gets PUBACK 0x87.
func TestRefusedPublishKeepsConnection(t *testing.T) {
	mosquittoPub := needTool(t, "mosquitto_pub")
	c := startCaddy(t, protocolConfig)
	sub := c.ConnectV5(t, "tcp", "refused-sub", func(cp *paho.Connect) { cp.KeepAlive = 10 })
	sub.Subscribe(t, "test/#", 1)
	expectOnly := func(topic string) {
		t.Helper()
		select {
		case m := <-sub.Msgs:
			if m.Topic != topic {
				t.Fatalf("subscriber got %s, want only %s", m.Topic, topic)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not delivered", topic)
		}
	}
	for _, door := range Doors {
		t.Run(door, func(t *testing.T) {
			if door == "tcp" || door == "tls" {
				for _, qos := range []string{"1", "2"} {
					// -k 10: within max_keepalive. mosquitto_pub exits
					// non-zero when the broker closes on it.
					args := append(mosquittoArgs(c, door), "-V", "mqttv311", "-k", "10", "-q", qos, "-t", "test/nosubscribe", "-m", "refused")
					if out, err := runMosquittoPub(t, mosquittoPub, args...); err != nil {
						t.Fatalf("mosquitto_pub -q %s to a refused topic: %v\n%s", qos, err, out)
					}
				}
			}
			v3 := c.ConnectV3(t, door, "refused-v3-"+door, func(o *pahov3.ClientOptions) { o.SetKeepAlive(10 * time.Second) })
			for _, qos := range []byte{1, 2} {
				if tok := v3.Client.Publish("test/nosubscribe", qos, false, "refused"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("v3 QoS %d publish to a refused topic: %v", qos, tok.Error())
				}
			}
			if tok := v3.Client.Publish("test/ok", 1, false, "ok"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("v3 publish after the refused ones: %v", tok.Error())
			}
			if v3.Lost.Load() || !v3.IsConnectionOpen() {
				t.Fatal("the v3 client lost its connection")
			}
			expectOnly("test/ok")

			v5 := c.ConnectV5(t, door, "refused-v5-"+door, func(cp *paho.Connect) { cp.KeepAlive = 10 })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := v5.Client.Publish(ctx, &paho.Publish{Topic: "test/nosubscribe", QoS: 1, Payload: []byte("refused")})
			if err == nil || resp == nil || resp.ReasonCode != 0x87 {
				t.Fatalf("v5 publish to a refused topic: %v, %+v", err, resp)
			}
			if resp.Properties != nil && resp.Properties.ReasonString != "" {
				t.Fatalf("PUBACK carries a Reason String %q", resp.Properties.ReasonString)
			}
			v5.Publish(t, "test/ok", 1, false, []byte("ok"))
			expectOnly("test/ok")
		})
	}
}

// TestMaxKeepaliveDoors: max_keepalive on every door. MQTT 3.1.1 clients
// asking for more are refused (return code 2, as mosquitto); an MQTT 5
// client is told the cap as Server Keep Alive.
func TestMaxKeepaliveDoors(t *testing.T) {
	mosquittoPub := needTool(t, "mosquitto_pub")
	c := startCaddy(t, protocolConfig)
	for _, door := range Doors {
		t.Run(door, func(t *testing.T) {
			if door == "tcp" || door == "tls" {
				args := append(mosquittoArgs(c, door), "-V", "mqttv311", "-k", "60", "-t", "test/ok", "-m", "x")
				out, err := runMosquittoPub(t, mosquittoPub, args...)
				if err == nil || !strings.Contains(strings.ToLower(out), "identifier rejected") {
					t.Fatalf("mosquitto_pub -k 60: %v\n%s", err, out)
				}
				args = append(mosquittoArgs(c, door), "-V", "mqttv311", "-k", "10", "-t", "test/ok", "-m", "x")
				if out, err := runMosquittoPub(t, mosquittoPub, args...); err != nil {
					t.Fatalf("mosquitto_pub -k 10: %v\n%s", err, out)
				}
			}
			opts := pahov3.NewClientOptions().AddBroker(c.URL(door)).SetClientID("ka-v3-" + door).
				SetTLSConfig(c.TLSConfig()).SetKeepAlive(60 * time.Second).SetAutoReconnect(false).SetProtocolVersion(4)
			cl := pahov3.NewClient(opts)
			if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
				cl.Disconnect(0)
				t.Fatalf("v3 keepalive 60 accepted (%v)", tok.Error())
			}

			conn := c.Dial(t, door)
			defer conn.Close()
			connect := &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: "ka-v5-" + door, KeepAlive: 60, CleanStart: true}
			if _, err := connect.WriteTo(conn); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			pk, err := packets.ReadPacket(conn)
			if err != nil {
				t.Fatal(err)
			}
			ack, ok := pk.Content.(*packets.Connack)
			if !ok || ack.ReasonCode != 0 {
				t.Fatalf("CONNACK %v", pk)
			}
			if ack.Properties == nil || ack.Properties.ServerKeepAlive == nil || *ack.Properties.ServerKeepAlive != 10 {
				t.Fatalf("CONNACK properties %+v, want Server Keep Alive 10", ack.Properties)
			}
		})
	}
}

// TestRefusedReloadWarnsNothing: a reload that fails (here: a password file
// that does not exist) changes nothing, so it logs no "broker limits
// changed" warning, while one that goes live does.
func TestRefusedReloadWarnsNothing(t *testing.T) {
	c := startCaddy(t, "")
	cfg := CaddyConfig{Ports: c.Ports, Extra: "max_inflight_messages 5\n\t\tpassword_file /nonexistent/mqtt.passwd"}
	conf := c.writeConfig(render(t, baseCaddyfile, cfg))
	out, err := exec.Command(caddyBin, "reload", "--config", conf, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("127.0.0.1:%d", c.Ports.Admin)).CombinedOutput()
	if err == nil {
		t.Fatalf("reload with a missing password file succeeded:\n%s", out)
	}
	if strings.Contains(c.Log(), "broker limits changed") {
		t.Fatalf("a refused reload logged the limits warning:\n%s", tail(c.Log(), 20))
	}
	c.Reload(CaddyConfig{Extra: "max_inflight_messages 5"})
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(c.Log(), "broker limits changed"); {
		if time.Now().After(deadline) {
			t.Fatalf("a reload that changed a limit logged no warning:\n%s", tail(c.Log(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
