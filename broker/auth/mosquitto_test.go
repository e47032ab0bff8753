package auth

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// needTool returns the path of an external program. Locally a missing
// program skips the test; in CI (CI set), which installs mosquitto, it is a
// failure, so the interoperability checks cannot silently stop running.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found on PATH but CI is set (install Debian's mosquitto and mosquitto-clients): %v", name, err)
		}
		t.Skipf("%s not on PATH (apt-get install mosquitto mosquitto-clients); skipping", name)
	}
	return path
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestMosquittoPasswdFilesVerify checks that files written by the real
// mosquitto_passwd authenticate here.
func TestMosquittoPasswdFilesVerify(t *testing.T) {
	mp := needTool(t, "mosquitto_passwd")
	path := filepath.Join(t.TempDir(), "passwd")
	runTool(t, mp, "-b", "-c", path, "alice", "alice's s3cret")
	runTool(t, mp, "-b", path, "bob", "pässwörd with spaces")
	runTool(t, mp, "-H", "sha512", "-b", path, "carol", "legacy") // mosquitto 1.x format
	runTool(t, mp, "-b", path, "dave", "temp")
	runTool(t, mp, "-D", path, "dave")

	content := mustRead(t, path)
	t.Logf("mosquitto_passwd wrote:\n%s", content)
	if !regexp.MustCompile(`(?m)^alice:\$7\$\d+\$`).MatchString(content) {
		t.Errorf("expected a $7$ entry for alice")
	}
	if !regexp.MustCompile(`(?m)^carol:\$6\$`).MatchString(content) {
		t.Errorf("expected a $6$ entry for carol")
	}
	p, err := ParsePasswordFile(strings.NewReader(content), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "alice's s3cret", true},
		{"alice", "alice's s3cret ", false},
		{"alice", "", false},
		{"bob", "pässwörd with spaces", true},
		{"bob", "passwort with spaces", false},
		{"carol", "legacy", true},
		{"carol", "Legacy", false},
		{"dave", "temp", false}, // deleted
	} {
		if got := p.Check(c.user, c.pw); got != c.want {
			t.Errorf("Check(%q, %q) = %v, want %v", c.user, c.pw, got, c.want)
		}
	}

	// Our editor keeps mosquitto_passwd's lines and mosquitto_passwd can
	// keep working on the result (it does not allow comments, so add none).
	err = EditPasswordFile(path, func(f *PasswordFile) error {
		_, err := f.SetHash("erin", mustHash(t, "erin pw"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	runTool(t, mp, "-b", path, "frank", "frank pw")
	p, err = ParsePasswordFile(strings.NewReader(mustRead(t, path)), path)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Check("alice", "alice's s3cret") || !p.Check("erin", "erin pw") || !p.Check("frank", "frank pw") {
		t.Error("file edited by both tools does not authenticate everyone")
	}
}

func mustHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := HashPasswordPBKDF2(pw, DefaultPBKDF2Iterations, 12)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestMosquittoBrokerAcceptsOurHashes runs the real mosquitto broker with a
// password file written by this package and logs in with mosquitto_pub.
func TestMosquittoBrokerAcceptsOurHashes(t *testing.T) {
	broker := needTool(t, "mosquitto")
	pub := needTool(t, "mosquitto_pub")

	version := mosquittoVersion(t, broker)
	t.Logf("mosquitto version %s", version)

	h101, err := HashPasswordPBKDF2("pw-101", 101, 12)
	if err != nil {
		t.Fatal(err)
	}
	h1000 := mustHash(t, "pw-1000")
	h64, err := HashPassword("pw-default")
	if err != nil {
		t.Fatal(err)
	}
	f := &PasswordFile{}
	for user, h := range map[string]string{"u101": h101, "u1000": h1000, "udefault": h64} {
		if _, err := f.SetHash(user, h); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	pwPath := filepath.Join(dir, "passwd")
	if err := WritePasswordFile(pwPath, f); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	// "user root" stops mosquitto from dropping privileges to the mosquitto
	// user when the tests run as root, which could not read t.TempDir().
	err = os.WriteFile(conf, []byte(fmt.Sprintf(
		"listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\nuser root\npersistence false\n", port, pwPath)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	startMosquitto(t, broker, conf, port)

	login := func(user, pw string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, pub, "-h", "127.0.0.1", "-p", fmt.Sprint(port),
			"-u", user, "-P", pw, "-i", "authtest-"+user, "-t", "test", "-m", "x", "-q", "1")
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("mosquitto_pub timed out: %s", out)
		}
		t.Logf("login %s/%s: err=%v %s", user, pw, err, bytes.TrimSpace(out))
		return err == nil
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"u101", "pw-101", true},
		{"u101", "wrong", false},
		{"u1000", "pw-1000", true},
		{"u1000", "pw-101", false},
		{"nobody", "pw-101", false},
	} {
		if got := login(c.user, c.pw); got != c.want {
			t.Errorf("mosquitto login %s with %q = %v, want %v", c.user, c.pw, got, c.want)
		}
	}
	// HashPassword's 64-byte salt is mosquitto 2.1's format; 2.0 only
	// accepts 12-byte salts and drops such an entry.
	want64 := !strings.HasPrefix(version, "2.0.") && !strings.HasPrefix(version, "1.")
	if got := login("udefault", "pw-default"); got != want64 {
		t.Errorf("mosquitto %s login with a 64-byte-salt hash = %v, want %v", version, got, want64)
	}
}

func mosquittoVersion(t *testing.T, broker string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, broker, "-h").CombinedOutput() // exits 3
	m := regexp.MustCompile(`mosquitto version (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("cannot read mosquitto version from: %s", out)
	}
	return string(m[1])
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMosquitto starts the broker, waits until it accepts connections and
// stops it (only this process) when the test ends.
func startMosquitto(t *testing.T, broker, conf string, port int) {
	t.Helper()
	var logBuf bytes.Buffer
	cmd := exec.Command(broker, "-c", conf)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		t.Logf("mosquitto log:\n%s", logBuf.String())
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("mosquitto exited early")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on port %d within 10s", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
