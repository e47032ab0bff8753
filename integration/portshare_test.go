package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// portShareCaddyfile puts MQTT on the web ports:
//   - the HTTPS port serves a page, WSS at /mqtt and MQTT over TLS for
//     clients offering ALPN mqtt or x-amzn-mqtt-ca (AWS IoT's convention for
//     networks that only open 443), with caddy-l4's listener wrapper in front
//     of the tls one;
//   - the HTTP port serves a page, WS at /mqtt and raw MQTT, recognised by
//     layer4.matchers.mqtt in the same listener wrapper;
//   - {{.TCP}} is the layer4-app variant: MQTT by the mqtt matcher, anything
//     else proxied to the HTTP port.
//
// Ports.TLS is the HTTPS port here, so the harness's "tls" door dials it.
const portShareCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	http_port {{.HTTP}}
	https_port {{.HTTPS}}
	default_bind 127.0.0.1
	local_certs
	skip_install_trust
	servers 127.0.0.1:{{.HTTPS}} {
		listener_wrappers {
			layer4 {
				@mqtt tls alpn mqtt x-amzn-mqtt-ca
				route @mqtt {
					tls {
						connection_policy {
							alpn mqtt x-amzn-mqtt-ca
							default_sni localhost
						}
					}
					mqtt
				}
			}
			tls
		}
	}
	servers 127.0.0.1:{{.HTTP}} {
		listener_wrappers {
			layer4 {
				@mqtt mqtt
				route @mqtt {
					mqtt
				}
			}
		}
	}
	mqtt {
		allow_anonymous
		connect_timeout 2s
	}
	layer4 {
		127.0.0.1:{{.TCP}} {
			@mqtt mqtt
			route @mqtt {
				mqtt
			}
			route {
				proxy 127.0.0.1:{{.HTTP}}
			}
		}
	}
}

https://localhost:{{.HTTPS}} {
	mqtt /mqtt
	respond "https page"
}

http://localhost:{{.HTTP}} {
	mqtt /mqtt
	respond "http page"
}
`

func startPortShareCaddy(t *testing.T) *Caddy {
	t.Helper()
	p := freePorts(t)
	p.TLS = p.HTTPS
	return startCaddyWith(t, portShareCaddyfile, CaddyConfig{Ports: p})
}

// getPage fetches url through a client trusting the internal CA and returns
// the body and the protocol used.
func getPage(t *testing.T, c *Caddy, url string, h2 bool) (string, string) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: c.TLSConfig(), ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b), resp.Proto
}

// TestMQTTOnHTTPSPort: one port serves an HTTPS page (HTTP/2 and 1.1), MQTT
// over WSS at /mqtt, and MQTT over TLS for clients offering ALPN mqtt or
// x-amzn-mqtt-ca; all of them reach the same broker.
func TestMQTTOnHTTPSPort(t *testing.T) {
	c := startPortShareCaddy(t)
	page := fmt.Sprintf("https://localhost:%d/", c.Ports.HTTPS)
	for _, h2 := range []bool{true, false} {
		body, proto := getPage(t, c, page, h2)
		if body != "https page" {
			t.Errorf("%s page: %q", proto, body)
		}
		if want := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]; proto != want {
			t.Errorf("protocol %s, want %s", proto, want)
		}
	}

	wss := c.ConnectV5(t, "wss", "share-wss")
	wss.Subscribe(t, "share/#", 1)
	overTLS := c.ConnectV5(t, "tls", "share-tls") // ALPN mqtt, same port
	overTLS.Subscribe(t, "share/#", 1)

	// An AWS IoT-style client offering only x-amzn-mqtt-ca.
	aconn, err := handshake(c.Ports.HTTPS, c.TLSConfig("x-amzn-mqtt-ca"))
	if err != nil {
		t.Fatal(err)
	}
	if got := aconn.ConnectionState().NegotiatedProtocol; got != "x-amzn-mqtt-ca" {
		t.Errorf("negotiated %q", got)
	}
	aws := connectV5Over(t, aconn, "tls", "share-aws")

	for _, pub := range []*V5{wss, overTLS, aws} {
		pub.Publish(t, "share/"+pub.Client.ClientID(), 1, false, []byte("via "+pub.Door))
		for _, sub := range []*V5{wss, overTLS} {
			select {
			case m := <-sub.Msgs:
				if m.Topic != "share/"+pub.Client.ClientID() {
					t.Errorf("%s got %s", sub.Door, m.Topic)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: message from %s not delivered", sub.Door, pub.Client.ClientID())
			}
		}
	}

	// Without ALPN the connection goes to the HTTPS server: an MQTT client
	// has to offer mqtt on this port (on the dedicated MQTT/TLS port it need
	// not). The broker never sees its CONNECT, so no CONNACK comes back.
	conn, err := handshake(c.Ports.HTTPS, c.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	write(t, conn, connectPacket(5, "no-alpn"))
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	first := make([]byte, 1)
	if n, _ := conn.Read(first); n == 1 && first[0] == 0x20 {
		t.Error("MQTT without ALPN on the HTTPS port got a CONNACK")
	}
}

// TestMQTTAndHTTPOnOnePort: raw MQTT and plain HTTP (a page, WS at /mqtt)
// on one port, told apart by layer4.matchers.mqtt: in a listener wrapper of
// the HTTP server, and in a layer4 app route that proxies everything else to
// the HTTP server.
func TestMQTTAndHTTPOnOnePort(t *testing.T) {
	c := startPortShareCaddy(t)
	ws := c.ConnectV5(t, "ws", "plain-ws")
	ws.Subscribe(t, "plain/#", 1)

	for _, tc := range []struct {
		name string
		port int
	}{
		{"listener wrapper on the HTTP port", c.Ports.HTTP},
		{"layer4 app port with proxy", c.Ports.TCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The site is http://localhost: ask for it by that name.
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", tc.port), nil)
			req.Host = "localhost"
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "http page" {
				t.Errorf("page for localhost: %d %q", resp.StatusCode, b)
			}

			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", tc.port), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, version := range []string{"v5", "v3"} {
				topic := fmt.Sprintf("plain/%d/%s", tc.port, version)
				if version == "v5" {
					v := connectV5Over(t, conn, "tcp", fmt.Sprintf("raw-%d", tc.port))
					v.Publish(t, topic, 1, false, []byte("raw mqtt"))
				} else {
					v := c.ConnectV3(t, "tcp", "raw3", func(o *pahov3.ClientOptions) {
						o.Servers = nil
						o.AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", tc.port))
					})
					v.Publish(t, topic, 1, false, []byte("raw mqtt"))
				}
				select {
				case m := <-ws.Msgs:
					if m.Topic != topic || string(m.Payload) != "raw mqtt" {
						t.Errorf("ws got %s %q", m.Topic, m.Payload)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("raw %s MQTT on port %d did not reach the WS subscriber", version, tc.port)
				}
			}
		})
	}
}

// TestWebPortsExample runs caddyfile-examples/web-ports.Caddyfile as shipped
// (example.com renamed to example.test, 443/80 moved to free loopback ports,
// pebble as the ACME CA): the page, WSS, MQTT/TLS by ALPN on the HTTPS port,
// and raw MQTT on the HTTP port all work, with the example's user.
func TestWebPortsExample(t *testing.T) {
	ports := freePorts(t)
	pb := startPebble(t, time.Hour, ports.HTTP, ports.HTTPS)
	conf := exampleOnLoopback(t, "../caddyfile-examples/web-ports.Caddyfile", ports, pb, "web-ports page",
		"servers :443 {", fmt.Sprintf("servers 127.0.0.1:%d {", ports.HTTPS),
		"servers :80 {", fmt.Sprintf("servers 127.0.0.1:%d {", ports.HTTP))
	c := startCaddyConfig(t, conf, ports, ports.HTTP, ports.HTTPS)
	roots := pb.Roots(t)
	site := &tls.Config{RootCAs: roots, ServerName: "example.test"}
	waitLeaf(t, c, ports.HTTPS, site, 60*time.Second)

	// The page, over HTTP/2.
	tr := &http.Transport{TLSClientConfig: site, ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", ports.HTTPS))
		}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(fmt.Sprintf("https://example.test:%d/", ports.HTTPS))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "web-ports page" || resp.ProtoMajor != 2 {
		t.Errorf("page: %s %q", resp.Proto, body)
	}

	login := withLogin("sensor-1", "change-me")
	wconn, _ := dialWSSName(t, "example.test", ports.HTTPS, roots)
	wss := connectV5Over(t, wconn, "wss", "web-wss", login)
	wss.Subscribe(t, "web/#", 1)
	tconn, err := handshake(ports.HTTPS, &tls.Config{RootCAs: roots, ServerName: "example.test", NextProtos: []string{"mqtt"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := tconn.ConnectionState().NegotiatedProtocol; got != "mqtt" {
		t.Errorf("ALPN on the HTTPS port: %q", got)
	}
	overTLS := connectV5Over(t, tconn, "tls", "web-tls", login)
	rawConn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports.HTTP), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	overHTTPPort := connectV5Over(t, rawConn, "tcp", "web-raw", login)
	for _, v := range []*V5{overTLS, overHTTPPort} {
		v.Publish(t, "web/"+v.Door, 1, false, []byte(v.Door))
		if m := recv(t, wss.Msgs); m.Topic != "web/"+v.Door {
			t.Fatalf("WSS subscriber got %s", m.Topic)
		}
	}
	// Plain HTTP on the same port as raw MQTT still redirects to HTTPS.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/x", ports.HTTP), nil)
	req.Host = "example.test"
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect && resp.StatusCode != http.StatusMovedPermanently {
		t.Errorf("HTTP on the shared port: %d, want a redirect", resp.StatusCode)
	}
}
