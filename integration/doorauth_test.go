package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// doorAuthCaddyfile gives the plain TCP door its own password_file and
// acl_file; the other doors use the global password_file and no ACL.
func doorAuthCaddyfile(doorPasswd, doorACL string) string {
	return derive(authCaddyfile, `		127.0.0.1:{{.TCP}} {
			route {
				mqtt
			}`, fmt.Sprintf(`		127.0.0.1:{{.TCP}} {
			route {
				mqtt {
					password_file %s
					acl_file %s
				}
			}`, doorPasswd, doorACL))
}

// TestDoorPasswordAndACLFiles: a door's own password_file and acl_file
// replace the global ones for its clients (mosquitto's
// per_listener_settings); a reload re-reads them without dropping the
// door's sessions; a door that is given other files has its old sessions
// disconnected by the reload.
func TestDoorPasswordAndACLFiles(t *testing.T) {
	dir := t.TempDir()
	global, doorPw := filepath.Join(dir, "global.passwd"), filepath.Join(dir, "door.passwd")
	acl1, acl2 := filepath.Join(dir, "door1.acl"), filepath.Join(dir, "door2.acl")
	writeFile(t, global, "bob:"+hashPassword(t, "bob-pw")+"\n")
	writeFile(t, doorPw, "alice:"+hashPassword(t, "alice-pw")+"\n")
	writeFile(t, acl1, aclFile)
	writeFile(t, acl2, "user alice\ntopic write elsewhere/#\n")
	cfg := CaddyConfig{Ports: freePorts(t), Extra: "password_file " + global}
	c := startCaddyWith(t, doorAuthCaddyfile(doorPw, acl1), cfg)

	for _, tc := range []struct {
		door, user, pw string
		want           byte
	}{
		{"tcp", "alice", "alice-pw", 0},
		{"tcp", "bob", "bob-pw", 0x86}, // not in the door's file
		{"ws", "bob", "bob-pw", 0},
		{"ws", "alice", "alice-pw", 0x86}, // not in the global file
	} {
		if rc := tryV5(t, c, tc.door, tc.user, tc.pw); rc != tc.want {
			t.Errorf("%s via %s: reason %#x, want %#x", tc.user, tc.door, rc, tc.want)
		}
	}

	alice := c.ConnectV5(t, "tcp", "alice", withLogin("alice", "alice-pw"))
	bob := c.ConnectV5(t, "ws", "bob", withLogin("bob", "bob-pw"))
	for _, tc := range []struct {
		who   *V5
		topic string
		want  byte
	}{
		{alice, "alice/a", 0},
		{alice, "other/a", 0x87}, // the door's ACL
		{bob, "other/a", 0},      // no global ACL
	} {
		if rc := publishReason(t, tc.who, tc.topic); rc != tc.want {
			t.Errorf("%s publishes %s: reason %#x, want %#x", tc.who.Door, tc.topic, rc, tc.want)
		}
	}

	// The door's ACL file is edited: alice loses write access on her
	// session at its next publish.
	writeFile(t, acl1, strings.Replace(aclFile, "topic readwrite alice/#", "topic read alice/#", 1))
	reloadWith(t, c, doorAuthCaddyfile(doorPw, acl1), cfg)
	if rc := publishReason(t, alice, "alice/b"); rc != 0x87 {
		t.Errorf("after the edit, alice/b: reason %#x, want 0x87", rc)
	}

	// The door now names another ACL file: the reload disconnects the old
	// session (DISCONNECT 0x87); a new connection gets the new file's rules.
	reloadWith(t, c, doorAuthCaddyfile(doorPw, acl2), cfg)
	waitDisconnect(t, alice, "old session after the door changed files", 0x87)
	if bob.Lost.Load() {
		t.Fatal("a session of another door was dropped by the reload")
	}
	alice2 := c.ConnectV5(t, "tcp", "alice2", withLogin("alice", "alice-pw"))
	if rc := publishReason(t, alice2, "elsewhere/a"); rc != 0 {
		t.Errorf("new session under the new file: reason %#x, want 0", rc)
	}
	if rc := publishReason(t, bob, "other/b"); rc != 0 {
		t.Errorf("bob after the reloads: reason %#x, want 0", rc)
	}
}
