package caddymqtt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPasswdNeedsCreateForNewFile: `caddy mqtt passwd -b` on a file that
// does not exist fails, as mosquitto_passwd does (a mistyped path used to
// become a new file Caddy never reads); -c creates it, and then -b edits it.
func TestPasswdNeedsCreateForNewFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mqtt.passwd")
	run := func(args ...string) error {
		c := passwdCommand()
		c.SetArgs(args)
		c.SetOut(new(strings.Builder))
		c.SetErr(new(strings.Builder))
		return c.Execute()
	}
	err := run("-b", file, "alice", "secret")
	if err == nil || !strings.Contains(err.Error(), "use -c to create it") {
		t.Fatalf("-b on a missing file: %v", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the file was created: %v", err)
	}
	if err := run("-D", file, "alice"); err == nil {
		t.Fatal("-D on a missing file succeeded")
	}
	if err := run("-c", "-b", file, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	if err := run("-b", file, "bob", "secret"); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(file)
	if !strings.Contains(string(body), "alice:") || !strings.Contains(string(body), "bob:") {
		t.Fatalf("file:\n%s", body)
	}
}
