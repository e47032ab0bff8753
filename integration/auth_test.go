package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// authCaddyfile is baseCaddyfile without allow_anonymous: the mqtt block
// is {{.Extra}}, and {{.Body}} goes into the layer4 TLS connection policy
// (for client_auth).
// authCaddyfile is the base config without allow_anonymous and the small
// packet limit, and with {{.Body}} inside the MQTT/TLS connection policy.
var authCaddyfile = derive(baseCaddyfile,
	"\t\tallow_anonymous\n\t\tconnect_timeout 1s\n\t\tmax_packet_size 64KiB\n", "\t\tconnect_timeout 2s\n",
	"default_sni localhost\n", "default_sni localhost\n\t\t\t\t\t\t{{.Body}}\n",
	`respond "wss {{.Body}}"`, `respond "wss"`,
	`respond "ws {{.Body}}"`, `respond "ws"`,
)

// reloadWith runs `caddy reload --force` with tmpl. --force makes Caddy
// load a config equal to the running one, which is how an operator makes
// it re-read an edited password or ACL file.
func reloadWith(t *testing.T, c *Caddy, tmpl string, cfg CaddyConfig) {
	t.Helper()
	cfg.Ports = c.Ports
	conf := c.writeConfig(render(t, tmpl, cfg))
	out, err := exec.Command(caddyBin, "reload", "--force", "--config", conf, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("127.0.0.1:%d", c.Ports.Admin)).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy reload: %v\n%s", err, out)
	}
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed: .ci/run must install it", name)
		}
		t.Skipf("%s not installed (CI installs mosquitto and mosquitto-clients)", name)
	}
	return path
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tryV5 sends an MQTT 5 CONNECT through door and returns the CONNACK's
// reason code (the client is disconnected again when it was accepted).
func tryV5(t *testing.T, c *Caddy, door, user, password string) byte {
	t.Helper()
	cl := paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: c.Dial(t, door)}})
	cp := &paho.Connect{ClientID: "try-" + door, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	if password != "" {
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := cl.Connect(ctx, cp)
	if ca == nil {
		t.Fatalf("v5 connect via %s: no CONNACK: %v", door, err)
	}
	if ca.ReasonCode == 0 {
		_ = cl.Disconnect(&paho.Disconnect{})
	}
	return ca.ReasonCode
}

// tryV3 does the same with MQTT 3.1.1 and returns the CONNACK return code.
func tryV3(t *testing.T, c *Caddy, door, user, password string) byte {
	t.Helper()
	opts := pahov3.NewClientOptions().AddBroker(c.URL(door)).SetClientID("try3-" + door).
		SetProtocolVersion(4).SetTLSConfig(c.TLSConfig()).SetAutoReconnect(false).SetConnectRetry(false).
		SetUsername(user).SetPassword(password)
	cl := pahov3.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("v3 connect via %s: timeout", door)
	}
	if tok.Error() == nil {
		cl.Disconnect(100)
	}
	return tok.(*pahov3.ConnectToken).ReturnCode()
}

func withLogin(user, password string) func(*paho.Connect) {
	return func(cp *paho.Connect) {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
}

// TestPasswordFile: a password file written by Debian's mosquitto_passwd
// is accepted as it is, on every door and by mosquitto_pub; a wrong
// password and a missing one are refused with 0x86 (v5) / 5 (v3, as
// mosquitto answers), and
// anonymous clients are refused because allow_anonymous is off by default.
func TestPasswordFile(t *testing.T) {
	mosquittoPasswd := needTool(t, "mosquitto_passwd")
	mosquittoPub := needTool(t, "mosquitto_pub")
	dir := t.TempDir()
	pwfile := filepath.Join(dir, "passwd")
	if out, err := exec.Command(mosquittoPasswd, "-b", "-c", pwfile, "alice", "s3cret pass").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	if out, err := exec.Command(mosquittoPasswd, "-b", pwfile, "bob", "hunter2").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	c := startCaddyWith(t, authCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: "password_file " + pwfile})

	for _, door := range Doors {
		t.Run(door, func(t *testing.T) {
			alice := c.ConnectV5(t, door, "alice-"+door, withLogin("alice", "s3cret pass"))
			alice.Subscribe(t, "pw/"+door, 1)
			alice.Publish(t, "pw/"+door, 1, false, []byte("hi"))
			select {
			case m := <-alice.Msgs:
				if string(m.Payload) != "hi" {
					t.Fatalf("got %q", m.Payload)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("own message not delivered")
			}
			if rc := tryV5(t, c, door, "alice", "wrong"); rc != 0x86 {
				t.Errorf("v5 wrong password: reason %#x, want 0x86", rc)
			}
			if rc := tryV5(t, c, door, "alice", ""); rc != 0x86 {
				t.Errorf("v5 no password: reason %#x, want 0x86", rc)
			}
			if rc := tryV5(t, c, door, "mallory", "s3cret pass"); rc != 0x86 {
				t.Errorf("v5 unknown user: reason %#x, want 0x86", rc)
			}
			if rc := tryV5(t, c, door, "", ""); rc != 0x86 {
				t.Errorf("v5 anonymous: reason %#x, want 0x86", rc)
			}
			if rc := tryV3(t, c, door, "bob", "hunter2"); rc != 0 {
				t.Errorf("v3 right password: return code %d", rc)
			}
			// 5 "not authorized", as mosquitto 2.0.11 answers both (and as
			// mochi maps 0x86 to MQTT 3).
			if rc := tryV3(t, c, door, "bob", "hunter3"); rc != 5 {
				t.Errorf("v3 wrong password: return code %d, want 5", rc)
			}
			if rc := tryV3(t, c, door, "", ""); rc != 5 {
				t.Errorf("v3 anonymous: return code %d, want 5", rc)
			}
		})
	}

	tcp := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(c.Ports.TCP), "-t", "pw/mosq", "-m", "x", "-q", "1"}
	if out, err := exec.Command(mosquittoPub, append(tcp, "-u", "alice", "-P", "s3cret pass")...).CombinedOutput(); err != nil {
		t.Errorf("mosquitto_pub with the right password: %v\n%s", err, out)
	}
	out, err := exec.Command(mosquittoPub, append(tcp, "-u", "alice", "-P", "nope")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not authorised") && !strings.Contains(string(out), "Bad user name or password") {
		t.Errorf("mosquitto_pub with a wrong password: %v\n%s", err, out)
	}
}

// aclFile is the ACL of TestACL and TestReloadRevokesPublish.
const aclFile = `# alice owns alice/#, everybody with a name reads public/#
user alice
topic readwrite alice/#
topic read public/#
topic write public/#

user bob
topic read alice/#
topic read public/#
`

// TestACL: a publish the ACL forbids is refused with PUBACK 0x87 and not
// delivered; an allowed one is delivered. The ACL is inline in the
// Caddyfile, the users inline too.
func TestACL(t *testing.T) {
	hashes := map[string]string{}
	for _, u := range []string{"alice", "bob"} {
		hashes[u] = hashPassword(t, u+"-pw")
	}
	var acl strings.Builder
	acl.WriteString("acl {\n")
	for _, line := range strings.Split(aclFile, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			acl.WriteString("\t\t\t" + line + "\n")
		}
	}
	acl.WriteString("\t\t}")
	extra := fmt.Sprintf("user alice %s\n\t\tuser bob %s\n\t\t%s", hashes["alice"], hashes["bob"], acl.String())
	c := startCaddyWith(t, authCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: extra})

	alice := c.ConnectV5(t, "tcp", "alice", withLogin("alice", "alice-pw"))
	bob := c.ConnectV5(t, "ws", "bob", withLogin("bob", "bob-pw"))
	bob.Subscribe(t, "alice/#", 1)
	alice.Subscribe(t, "public/#", 1)

	// bob may not write into alice's tree.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := bob.Client.Publish(ctx, &paho.Publish{Topic: "alice/inbox", QoS: 1, Payload: []byte("forged")})
	if resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("bob publishing to alice/inbox: %v %v, want PUBACK 0x87", resp, err)
	}
	// A subscription the ACL does not cover is refused in the SUBACK.
	sa, err := bob.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "secret/#", QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
		t.Fatalf("bob subscribing to secret/#: %v %v, want 0x87", sa, err)
	}
	// bob cannot publish to public/# either (read only)...
	resp, _ = bob.Client.Publish(ctx, &paho.Publish{Topic: "public/bob", QoS: 1, Payload: []byte("no")})
	if resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("bob publishing to public/bob: %v, want 0x87", resp)
	}
	// ...but alice can, and bob reads her tree.
	alice.Publish(t, "alice/status", 1, false, []byte("ok"))
	alice.Publish(t, "public/news", 1, false, []byte("news"))
	select {
	case m := <-bob.Msgs:
		if m.Topic != "alice/status" || string(m.Payload) != "ok" {
			t.Fatalf("bob got %s %q, want alice/status ok (the forged message must not arrive)", m.Topic, m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bob got nothing")
	}
	select {
	case m := <-alice.Msgs:
		if m.Topic != "public/news" {
			t.Fatalf("alice got %s %q (bob's refused publish must not arrive)", m.Topic, m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice got nothing")
	}
}

// TestReloadRevokesPublish: removing a user's write permission from the
// acl_file and reloading keeps the session connected, and its next publish
// is refused.
func TestReloadRevokesPublish(t *testing.T) {
	dir := t.TempDir()
	pwfile, aclPath := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	writeFile(t, pwfile, "alice:"+hashPassword(t, "alice-pw")+"\nbob:"+hashPassword(t, "bob-pw")+"\n")
	writeFile(t, aclPath, aclFile)
	cfg := CaddyConfig{Ports: freePorts(t), Extra: fmt.Sprintf("password_file %s\n\t\tacl_file %s", pwfile, aclPath)}
	c := startCaddyWith(t, authCaddyfile, cfg)

	alice := c.ConnectV5(t, "tcp", "alice", withLogin("alice", "alice-pw"))
	bob := c.ConnectV5(t, "tls", "bob", withLogin("bob", "bob-pw"))
	bob.Subscribe(t, "alice/#", 1)
	alice.Publish(t, "alice/before", 1, false, []byte("1"))
	if m := recv(t, bob.Msgs); m.Topic != "alice/before" {
		t.Fatalf("bob got %s", m.Topic)
	}

	writeFile(t, aclPath, strings.Replace(aclFile, "topic readwrite alice/#", "topic read alice/#", 1))
	reloadWith(t, c, authCaddyfile, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := alice.Client.Publish(ctx, &paho.Publish{Topic: "alice/after", QoS: 1, Payload: []byte("2")})
	if resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("publish after the reload: %v %v, want PUBACK 0x87 on the same session", resp, err)
	}
	// Same connection, never dropped: the PUBACK came over it, and paho
	// saw no error or server DISCONNECT.
	if alice.Lost.Load() || bob.Lost.Load() {
		t.Fatal("a session was dropped by the reload")
	}
	select {
	case d := <-alice.Disconnect:
		t.Fatalf("server disconnected alice: %v", d)
	case m := <-bob.Msgs:
		t.Fatalf("bob received %s after alice lost write access", m.Topic)
	case <-time.After(500 * time.Millisecond):
	}
	// Reading alice/# still works for alice: subscribe and get bob's... bob
	// cannot write there, so check the unchanged grant instead.
	alice.Subscribe(t, "alice/#", 1)
}

func recv(t *testing.T, ch chan *paho.Publish) *paho.Publish {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

// hashPassword makes a hash with `caddy mqtt passwd` when it exists and
// falls back to mosquitto_passwd, so these tests exercise real tools.
func hashPassword(t *testing.T, password string) string {
	t.Helper()
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	cmd := exec.Command(caddyBin, "mqtt", "passwd", "-b", "-c", f, "u", password)
	if out, err := cmd.CombinedOutput(); err != nil {
		mp, lerr := exec.LookPath("mosquitto_passwd")
		if lerr != nil {
			t.Fatalf("caddy mqtt passwd: %v\n%s", err, out)
		}
		if out, err := exec.Command(mp, "-b", "-c", f, "u", password).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	_, hash, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok {
		t.Fatalf("password file %q", b)
	}
	return hash
}
