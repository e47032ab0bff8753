package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// Kill9 kills the Caddy process with SIGKILL, as a crash or the OOM killer
// would, and waits for it to be gone.
func (c *Caddy) Kill9() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatal("caddy still running 10 s after SIGKILL")
	}
}

// Restart starts Caddy again, after Stop or Kill9, with the same config,
// ports and data directory, and waits until it serves.
func (c *Caddy) Restart() {
	c.t.Helper()
	select {
	case <-c.done:
	default:
		c.t.Fatal("Restart: caddy is still running")
	}
	fmt.Fprintf(c.log, "---- restart ----\n")
	c.launch()
	for _, port := range []int{c.Ports.TCP, c.Ports.TLS, c.Ports.HTTP, c.Ports.HTTPS} {
		c.waitPort(port)
	}
	c.waitCert()
}

// StorageFile is where `storage bolt` keeps the broker's state by default.
func (c *Caddy) StorageFile() string {
	return filepath.Join(c.dir, "data", "caddy", "mqtt", "broker.bolt")
}

// persistentV5 connects an MQTT 5 client that keeps its session for an hour.
func persistentV5(c *Caddy, t *testing.T, door, id string) *V5 {
	return c.ConnectV5(t, door, id, func(cp *paho.Connect) {
		cp.CleanStart = false
		expiry := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	})
}

func persistentV3(c *Caddy, t *testing.T, door, id string) *V3 {
	return c.ConnectV3(t, door, id, func(o *pahov3.ClientOptions) { o.SetCleanSession(false) })
}

// TestRestartKeepsQueuedMessages: persistent QoS 1 subscribers (MQTT 5 with
// a session expiry, MQTT 3.1.1 with clean session off) go offline; 5,000
// QoS 1 messages are published and acknowledged; Caddy is killed with
// SIGKILL right after the last PUBACK, without any grace; after a restart on
// the same data directory both subscribers get all 5,000 in order, and the
// retained message is back. (max_queued_messages is raised from its
// default of 1000 so that all 5,000 may wait.)
func TestRestartKeepsQueuedMessages(t *testing.T) {
	c := startCaddy(t, "storage bolt\n\tmax_queued_messages 5000")
	if _, err := os.Stat(c.StorageFile()); err != nil {
		t.Fatalf("storage file: %v", err)
	}

	sub5 := persistentV5(c, t, "tcp", "restart-sub5")
	sub5.Subscribe(t, "persist/#", 1)
	if err := sub5.Client.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	sub3 := persistentV3(c, t, "tls", "restart-sub3")
	sub3.Subscribe(t, "persist/#", 1)
	sub3.Client.Disconnect(100)

	pub := c.ConnectV5(t, "tcp", "restart-pub")
	pub.Publish(t, "kept/config", 1, true, []byte("retained value"))
	const n = 5000
	start := time.Now()
	for i := 0; i < n; i++ {
		pub.Publish(t, "persist/data", 1, false, []byte(fmt.Sprint(i)))
	}
	t.Logf("%d QoS 1 publishes acknowledged in %v (%.0f/s)", n, time.Since(start), n/time.Since(start).Seconds())
	c.Kill9()

	start = time.Now()
	c.Restart()
	t.Logf("restart until every door serves: %v", time.Since(start))

	start = time.Now()
	sub5 = persistentV5(c, t, "tcp", "restart-sub5")
	sub3 = persistentV3(c, t, "tls", "restart-sub3")
	expectSequence(t, sub5, "persist/data", n)
	expectSequence(t, sub3, "persist/data", n)
	t.Logf("both subscribers received %d queued messages in %v", n, time.Since(start))

	fresh := c.ConnectV5(t, "ws", "restart-reader")
	fresh.Subscribe(t, "kept/#", 1)
	topic, payload, ok := receiver(fresh).next(5 * time.Second)
	if !ok || topic != "kept/config" || payload != "retained value" {
		t.Fatalf("retained after kill -9: %q %q %v", topic, payload, ok)
	}
}

// expectSequence reads n messages on topic with payloads 0..n-1 in order. A
// resent duplicate of the message just received (QoS 1 is at least once) is
// tolerated and counted.
func expectSequence(t *testing.T, r receiver, topic string, n int) {
	t.Helper()
	dups := 0
	for i := 0; i < n; {
		tp, payload, ok := r.next(10 * time.Second)
		if !ok {
			t.Fatalf("%s: got %d of %d messages", r.name(), i, n)
		}
		if tp != topic {
			continue
		}
		if i > 0 && payload == fmt.Sprint(i-1) {
			dups++
			continue
		}
		if payload != fmt.Sprint(i) {
			t.Fatalf("%s: message %d has payload %q (lost or out of order)", r.name(), i, payload)
		}
		i++
	}
	if dups > 0 {
		t.Logf("%s: %d duplicates", r.name(), dups)
	}
}

// TestValidateDoesNotOpenStorage: `caddy validate` with storage configured
// creates no file and does not conflict with a running Caddy holding it.
func TestValidateDoesNotOpenStorage(t *testing.T) {
	c := startCaddy(t, "storage bolt")
	info, err := os.Stat(c.StorageFile())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "validate", "--config", filepath.Join(c.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(c.dir, "data"), "HOME="+c.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate with a running broker holding the store: %v\n%s", err, out)
	}
	after, err := os.Stat(c.StorageFile())
	if err != nil || after.Size() != info.Size() {
		t.Fatalf("validate touched the store: %v", err)
	}

	// A fresh data directory: validate must not create the store.
	empty := t.TempDir()
	cmd = exec.Command(caddyBin, "validate", "--config", filepath.Join(c.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+empty, "HOME="+empty)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(empty, "caddy", "mqtt", "broker.bolt")); !os.IsNotExist(err) {
		t.Fatalf("caddy validate created the store: %v", err)
	}
	if strings.Contains(c.Log(), "locked by another process") {
		t.Fatal("store reported locked")
	}
}

// TestReloadKeepsStorage: a reload that drops or changes `storage` keeps
// the running store (it is fixed for the broker's life) and says so.
func TestReloadKeepsStorage(t *testing.T) {
	c := startCaddy(t, "storage bolt")
	sub := persistentV5(c, t, "tcp", "reload-store-sub")
	sub.Subscribe(t, "rs/#", 1)
	c.Reload(CaddyConfig{Extra: "storage memory"})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(c.Log(), "mqtt storage changed") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(c.Log(), "mqtt storage changed") {
		t.Error("no warning that the storage change waits for a restart")
	}
	if sub.Lost.Load() {
		t.Fatal("subscriber lost its connection on reload")
	}
	if err := sub.Client.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	c.ConnectV5(t, "ws", "reload-store-pub").Publish(t, "rs/x", 1, false, []byte("queued"))
	// Still the bolt store: the queued message survives a kill -9 (and the
	// restart goes back to the config with storage).
	c.Kill9()
	c.writeConfig(render(t, baseCaddyfile, CaddyConfig{Ports: c.Ports, Extra: "storage bolt"}))
	c.Restart()
	sub = persistentV5(c, t, "tcp", "reload-store-sub")
	if _, payload, ok := sub.next(5 * time.Second); !ok || payload != "queued" {
		t.Fatalf("queued message after reload and kill -9: %q %v", payload, ok)
	}
}
