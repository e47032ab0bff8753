package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// jsDir holds the MQTT.js scripts and their package.json.
const jsDir = "js"

// requireNode returns the node binary, or skips the test when node or the
// npm packages are missing. On CI (CI set) missing tools are a failure, so
// the MQTT.js tests cannot silently stop running.
func requireNode(t *testing.T) string {
	t.Helper()
	missing := func(why string) {
		msg := why + "; run `npm ci --prefix integration/js` to enable the MQTT.js tests"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not found in PATH")
	}
	for _, pkg := range []string{"mqtt", "ws"} {
		if _, err := os.Stat(filepath.Join(jsDir, "node_modules", pkg, "package.json")); err != nil {
			missing("integration/js/node_modules/" + pkg + " is missing")
		}
	}
	return node
}

// jsResult is the JSON line roundtrip.mjs prints.
type jsResult struct {
	OK              bool   `json:"ok"`
	ProtocolVersion int    `json:"protocolVersion"`
	Subprotocol     string `json:"subprotocol"`
	Received        []struct {
		Topic   string `json:"topic"`
		QoS     byte   `json:"qos"`
		Payload string `json:"payload"`
	} `json:"received"`
	Error string `json:"error"`
}

// runRoundtrip runs js/roundtrip.mjs through door with MQTT.js protocol
// version version and fails the test unless all three messages it published
// came back to it. wss trusts only the internal CA.
func runRoundtrip(t *testing.T, node string, c *Caddy, door, topic string, version int) jsResult {
	t.Helper()
	args := []string{"roundtrip.mjs", c.URL(door), topic, fmt.Sprint(version)}
	if door == "wss" {
		args = append(args, c.RootPath())
	}
	// The script has its own 20 s timeout; this one catches a node that
	// does not even get that far.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "MQTT_TIMEOUT_MS=20000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("node %s: %v in %v", strings.Join(args, " "), runErr, time.Since(start).Round(time.Millisecond))

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res jsResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("MQTT.js via %s v%d: no result (%v, run: %v)\nstdout: %s\nstderr: %s",
			door, version, err, runErr, stdout.String(), stderr.String())
	}
	if runErr != nil || !res.OK {
		t.Fatalf("MQTT.js via %s v%d failed: %s (run: %v)\nstderr: %s", door, version, res.Error, runErr, stderr.String())
	}
	want := "mqtt"
	if version == 3 {
		want = "mqttv3.1"
	}
	if res.Subprotocol != want {
		t.Fatalf("MQTT.js via %s v%d: subprotocol %q, want %q", door, version, res.Subprotocol, want)
	}
	if len(res.Received) != 3 {
		t.Fatalf("MQTT.js via %s v%d: received %d messages, want 3: %+v", door, version, len(res.Received), res.Received)
	}
	return res
}

// TestMQTTJS runs the most common browser/Node MQTT client against the
// WebSocket doors: MQTT 3.1 (subprotocol mqttv3.1), 3.1.1 and 5, QoS 0-2,
// plain and TLS, and across doors to a Go client on plain TCP.
func TestMQTTJS(t *testing.T) {
	node := requireNode(t)
	c := startCaddy(t, "")

	for _, door := range []string{"ws", "wss"} {
		for _, version := range []int{4, 5} {
			t.Run(fmt.Sprintf("%s/v%d", door, version), func(t *testing.T) {
				runRoundtrip(t, node, c, door, fmt.Sprintf("mqttjs/%s/v%d", door, version), version)
			})
		}
	}

	t.Run("ws/v3", func(t *testing.T) {
		runRoundtrip(t, node, c, "ws", "mqttjs/ws/v3", 3)
	})

	// What MQTT.js publishes on wss reaches a Go client on tcp, each
	// message at the QoS it was published with.
	t.Run("wss-to-tcp", func(t *testing.T) {
		const topic = "mqttjs/cross/wss-to-tcp"
		sub := c.ConnectV5(t, "tcp", "go-cross-sub")
		sub.Subscribe(t, topic, 2)

		res := runRoundtrip(t, node, c, "wss", topic, 5)
		var want []string
		for _, m := range res.Received {
			want = append(want, fmt.Sprintf("%d %s", m.QoS, m.Payload))
		}

		var got []string
		timeout := time.After(10 * time.Second)
		for len(got) < len(want) {
			select {
			case p := <-sub.Msgs:
				if p.Topic != topic {
					t.Fatalf("go client got topic %q, want %q", p.Topic, topic)
				}
				got = append(got, fmt.Sprintf("%d %s", p.QoS, p.Payload))
			case <-timeout:
				t.Fatalf("go client on tcp got %q, want %q", got, want)
			}
		}
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("go client on tcp got %q, want %q", got, want)
		}
	})
}

// TestMQTTJSProperties: MQTT.js 5 publishes at QoS 1 and 2 with several user
// properties (a repeated key, UTF-8), content type, response topic,
// correlation data and payload format; both are acknowledged and everything
// arrives. mochi answered such a QoS 1 PUBLISH with PUBACK reason 0x01 and
// the user property echoed back, which MQTT.js never took as the PUBACK.
func TestMQTTJSProperties(t *testing.T) {
	node := requireNode(t)
	c := startCaddy(t, "")
	for _, door := range []string{"tcp", "ws", "wss"} {
		t.Run(door, func(t *testing.T) {
			url := c.URL(door)
			args := []string{"properties.mjs", strings.Replace(url, "tcp://", "mqtt://", 1), "props/" + door}
			if door == "wss" {
				args = append(args, c.RootPath())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, args...)
			cmd.Dir = jsDir
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			runErr := cmd.Run()
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			var res struct {
				OK       bool   `json:"ok"`
				Acks     int    `json:"acks"`
				Error    string `json:"error"`
				Received []struct {
					QoS             int                 `json:"qos"`
					Payload         string              `json:"payload"`
					PayloadFormat   *bool               `json:"payloadFormatIndicator"`
					ContentType     string              `json:"contentType"`
					ResponseTopic   string              `json:"responseTopic"`
					CorrelationData string              `json:"correlationData"`
					UserProperties  map[string][]string `json:"userProperties"`
				} `json:"received"`
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || runErr != nil || !res.OK {
				t.Fatalf("properties.mjs via %s: %v / %v / %+v\nstdout: %s\nstderr: %s", door, runErr, err, res, stdout.String(), stderr.String())
			}
			if res.Acks != 2 || len(res.Received) != 2 {
				t.Fatalf("acks %d, received %d", res.Acks, len(res.Received))
			}
			for _, m := range res.Received {
				if m.PayloadFormat == nil || !*m.PayloadFormat || m.ContentType != "text/plain; charset=utf-8" ||
					m.ResponseTopic != "props/"+door+"/reply" || m.CorrelationData != "000102feff" {
					t.Fatalf("message %+v lost properties", m)
				}
				u := m.UserProperties
				if strings.Join(u["k"], ",") != "v,w" || strings.Join(u["ключ"], ",") != "значение ✓" || len(u["empty"]) != 1 || u["empty"][0] != "" {
					t.Fatalf("user properties %v", u)
				}
			}
		})
	}
}
