package integration

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
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
