package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// deviceSim builds firmware/build/sim/device-sim: the device's own core,
// driven by the host clock and talking MQTT through libmosquitto.
func deviceSim(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("make", "-s", "-C", "../firmware", "sim").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("building the device simulator: %v\n%s", err, out)
		}
		t.Skipf("device simulator not built (run firmware/ci-deps.sh): %v\n%s", err, out)
	}
	path, err := filepath.Abs("../firmware/build/sim/device-sim")
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// firmwareACL gives each device the device topics and nothing else, and the
// web page (user web) the right to read them and to switch the LED.
const firmwareACL = `user esp8266-tcp
topic readwrite async-mqtt/#

user esp8266-tls
topic readwrite async-mqtt/#

user web
topic read async-mqtt/#
topic write async-mqtt/ESP8266/led/set
`

var tickFormat = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// TestDeviceSimulator runs the ESP8266 firmware's core (as the host device
// simulator) against the broker in Caddy: over plain MQTT with a password,
// and over MQTT/TLS with a certificate minted by `caddy mqtt cert`, where the
// broker takes the certificate's CN as the username. A web client sees
// test1..3, the date/time ticks, and the retained LED state follow its
// command; the ACL lets the devices use their topics only.
func TestDeviceSimulator(t *testing.T) {
	sim := deviceSim(t)
	dir := t.TempDir()
	pwfile, aclfile := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	writeFile(t, aclfile, firmwareACL)
	writeFile(t, pwfile, "esp8266-tcp:"+hashPassword(t, "device-secret")+"\nweb:"+hashPassword(t, "web-secret")+"\n")

	// Devices prove who they are with certificates on the MQTT/TLS door;
	// the page logs in with a password over WSS, so that door does not take
	// the identity from a certificate.
	tmpl := derive(deviceCACaddyfile,
		"mqtt /mqtt {\n\t\tuse_identity_as_username\n", "mqtt /mqtt {\n\t\tuse_identity_as_username false\n")
	c := startCaddyWith(t, tmpl, CaddyConfig{Ports: freePorts(t), Extra: fmt.Sprintf(
		"password_file %s\n\t\tacl_file %s\n\t\tuse_identity_as_username", pwfile, aclfile)})
	certDir := filepath.Join(dir, "device")
	if out, err := caddyCmd(t, c, "", "mqtt", "cert", "--cn", "esp8266-tls", "--out", certDir); err != nil {
		t.Fatalf("caddy mqtt cert: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"tcp-password", []string{"--host", "127.0.0.1", "--port", fmt.Sprint(c.Ports.TCP),
			"--client-id", "esp8266-tcp", "--username", "esp8266-tcp", "--password", "device-secret"}},
		{"tls-certificate", []string{"--host", "localhost", "--port", fmt.Sprint(c.Ports.TLS),
			"--client-id", "esp8266-tls",
			"--cafile", filepath.Join(certDir, "server_ca.pem"),
			"--certfile", filepath.Join(certDir, "client_cert.pem"),
			"--keyfile", filepath.Join(certDir, "client_key.pem")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			web := c.ConnectV5(t, "wss", "web-"+tc.name, withLogin("web", "web-secret"))
			web.Subscribe(t, "async-mqtt/#", 1)

			cmd := exec.Command(sim, append(tc.args, "--time-scale", "0.05", "--ticks", "4", "--max-runtime", "40", "--seed", "7")...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var simLog strings.Builder
			var mu sync.Mutex
			lines := make(chan struct{})
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					mu.Lock()
					simLog.WriteString(sc.Text() + "\n")
					mu.Unlock()
				}
			}()
			exited := make(chan error, 1)
			go func() { <-lines; exited <- cmd.Wait() }()

			var pubs []string
			ticks, ledOn, simDone := 0, false, false
			var simErr error
			deadline := time.After(30 * time.Second)
		collect:
			for ticks < 4 || len(pubs) < 3 || !ledOn || !simDone {
				select {
				case m := <-web.Msgs:
					switch p := string(m.Payload); m.Topic {
					case "async-mqtt/ESP8266_Pub":
						pubs = append(pubs, p)
						// The device subscribes before it publishes test1..3,
						// so once test3 is through, its command
						// subscription is in place: the page switches the
						// LED on.
						if p == "test3" {
							web.Publish(t, "async-mqtt/ESP8266/led/set", 1, false, []byte("on"))
						}
					case "async-mqtt/ESP8266_tic":
						if !tickFormat.MatchString(p) {
							t.Errorf("tick %q is not an ISO 8601 UTC time", p)
						}
						ticks++
					case "async-mqtt/ESP8266/led/state":
						ledOn = ledOn || p == "on"
					}
				case simErr = <-exited:
					simDone = true
				case <-deadline:
					_ = cmd.Process.Kill()
					break collect
				}
			}
			mu.Lock()
			log := simLog.String()
			mu.Unlock()
			if !simDone || simErr != nil {
				t.Fatalf("simulator: done=%v err=%v\n%s\n%s", simDone, simErr, log, stderr.String())
			}
			if strings.Join(pubs, ",") != "test1,test2,test3" {
				t.Errorf("web saw %q on async-mqtt/ESP8266_Pub, want test1,test2,test3", pubs)
			}
			if ticks < 4 {
				t.Errorf("web saw %d ticks, want 4", ticks)
			}
			if !ledOn {
				t.Errorf("LED state never became on after the command")
			}
			if !strings.Contains(log, "led state=on") {
				t.Errorf("the device did not switch its LED:\n%s", log)
			}
			if t.Failed() {
				t.Logf("simulator output:\n%s", log)
			}
		})
	}

	// The devices' credentials open nothing beyond their topics.
	dev := c.ConnectV5(t, "tcp", "esp8266-tcp-probe", withLogin("esp8266-tcp", "device-secret"))
	if code := publishReason(t, dev, "other/topic"); code != 0x87 {
		t.Errorf("device publishing outside its topics: reason %#x, want 0x87", code)
	}
}

// publishReason publishes at QoS 1 and returns the PUBACK reason code.
func publishReason(t *testing.T, v *V5, topic string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := v.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
	if resp == nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
	return resp.ReasonCode
}
