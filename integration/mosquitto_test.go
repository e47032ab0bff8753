package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startMosquitto runs mosquitto 2 with conf (its listener line is added, on
// a free loopback port) until the test ends, and returns its address once
// it accepts connections. The test is skipped when mosquitto is not
// installed.
func startMosquitto(t *testing.T, conf string) string {
	t.Helper()
	mosquitto, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("mosquitto broker not installed")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t).TCP)
	host, port, _ := net.SplitHostPort(addr)
	conf = fmt.Sprintf("listener %s %s\n", port, host) + conf
	if os.Geteuid() == 0 {
		// Started as root, mosquitto drops to user "mosquitto", which
		// cannot read 0600 files in the test's private directory.
		conf = "user root\n" + conf
	}
	path := filepath.Join(t.TempDir(), "mosquitto.conf")
	writeFile(t, path, conf)
	m := exec.Command(mosquitto, "-c", path)
	var log strings.Builder
	m.Stdout, m.Stderr = &log, &log
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Process.Kill(); _ = m.Wait() })
	for range 50 {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return addr
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("mosquitto does not listen on %s:\n%s", addr, log.String())
	return ""
}
