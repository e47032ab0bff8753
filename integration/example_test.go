package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// TestDefaultExampleRuns runs caddyfile-examples/Caddyfile itself (what
// `./xcaddy.sh run` serves), moved to free ports, and checks every door with
// an anonymous client, as its comment promises, and that the web page is
// at https://localhost:8443/.
func TestDefaultExampleRuns(t *testing.T) {
	body, err := os.ReadFile("../caddyfile-examples/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := strings.NewReplacer(
		"http_port 8080", "admin 127.0.0.1:{{.Admin}}\n\thttp_port {{.HTTP}}",
		"8080", "{{.HTTP}}",
		"8443", "{{.HTTPS}}",
		"1883", "{{.TCP}}",
		"8883", "{{.TLS}}",
	).Replace(string(body))
	for _, port := range []string{"{{.HTTP}}", "{{.HTTPS}}", "{{.TCP}}", "{{.TLS}}"} {
		if !strings.Contains(tmpl, port) {
			t.Fatalf("the example no longer uses the port %s stands for", port)
		}
	}
	c := startCaddyWith(t, tmpl, CaddyConfig{Ports: freePorts(t)})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: c.RootPool()}}}
	for path, want := range map[string]int{"/": 200, "/app.mjs": 200, "/nothing-here": 404} {
		resp, err := client.Get(fmt.Sprintf("https://localhost:%d%s", c.Ports.HTTPS, path))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/" && !strings.Contains(string(body), `data-websocket-path="/mqtt"`) {
			t.Errorf("GET /: not the dashboard page:\n%s", body)
		}
	}
	sub := c.ConnectV5(t, "tcp", "example-sub")
	sub.Subscribe(t, "example/#", 1)
	for _, door := range Doors {
		c.ConnectV3(t, door, "example-"+door).Publish(t, "example/"+door, 1, false, []byte(door))
		select {
		case m := <-sub.Msgs:
			if m.Topic != "example/"+door {
				t.Errorf("got %s", m.Topic)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing received from the %s door", door)
		}
	}
}

// TestDefaultExampleByIP: the embedded default answers on 127.0.0.1 and ::1
// as on localhost. mosquitto clients send the IP as SNI: with a certificate
// valid only for localhost, `mosquitto_pub -h 127.0.0.1 -p 8883 --cafile
// root.crt` failed ("no certificate available") and `-h ::1` failed in
// certmagic's IDNA conversion; ws://127.0.0.1:8080/mqtt got a 308.
func TestDefaultExampleByIP(t *testing.T) {
	mosquittoPub := needTool(t, "mosquitto_pub")
	body, err := os.ReadFile("../caddyfile-examples/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := strings.NewReplacer(
		"http_port 8080", "admin 127.0.0.1:{{.Admin}}\n\thttp_port {{.HTTP}}",
		"8080", "{{.HTTP}}",
		"8443", "{{.HTTPS}}",
		"1883", "{{.TCP}}",
		"8883", "{{.TLS}}",
	).Replace(string(body))
	c := startCaddyWith(t, tmpl, CaddyConfig{Ports: freePorts(t)})
	sub := c.ConnectV5(t, "tcp", "ip-sub")
	sub.Subscribe(t, "ip/#", 1)
	expect := func(topic string) {
		t.Helper()
		select {
		case m := <-sub.Msgs:
			if m.Topic != topic {
				t.Fatalf("got %s, want %s", m.Topic, topic)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not received", topic)
		}
	}

	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		topic := "ip/tls/" + strings.ReplaceAll(host, ":", "_")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, mosquittoPub, "-h", host, "-p", fmt.Sprint(c.Ports.TLS),
			"--cafile", c.RootPath(), "-q", "1", "-t", topic, "-m", "x").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("mosquitto_pub -h %s over TLS: %v\n%s\ncaddy log:\n%s", host, err, out, tail(c.Log(), 30))
		}
		expect(topic)
	}
	if strings.Contains(c.Log(), "idna") {
		t.Errorf("an IP SNI reached IDNA conversion:\n%s", tail(c.Log(), 30))
	}

	for _, host := range []string{"127.0.0.1", "[::1]"} {
		// The plain site answers on the IP instead of redirecting.
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Get(fmt.Sprintf("http://%s:%d/", host, c.Ports.HTTP))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("http://%s: status %d, want 200", host, resp.StatusCode)
		}
		url := fmt.Sprintf("ws://%s:%d/mqtt", host, c.Ports.HTTP)
		opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("ip-ws").SetAutoReconnect(false)
		cl := pahov3.NewClient(opts)
		if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: %v", url, tok.Error())
		}
		topic := "ip/ws/" + strings.Trim(host, "[]:")
		if tok := cl.Publish(topic, 1, false, "x"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s publish: %v", url, tok.Error())
		}
		expect(topic)
		cl.Disconnect(100)
	}
}
