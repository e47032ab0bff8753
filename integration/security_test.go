package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

// Tests named after the threats of issue 12, each against the real Caddy
// binary with real sockets.

// loginPacket is a CONNECT (MQTT 5 or 3.1.1, clean start) with a username
// and a password.
func loginPacket(version byte, clientID, user, password string) []byte {
	body := appendString(nil, "MQTT")
	body = append(body, version, 0x02|0x80|0x40, 0, 30)
	if version >= 5 {
		body = append(body, 0)
	}
	body = appendString(body, clientID)
	body = appendString(body, user)
	body = appendString(body, password)
	return append(append([]byte{0x10}, varint(len(body))...), body...)
}

// dialFrom opens a TCP connection to port on 127.0.0.1 from the loopback
// address local (any 127.x.y.z works on Linux), so that the broker sees
// another client IP.
func dialFrom(t testing.TB, local string, port int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestPreConnectMemoryPinning: 1,000 sockets that each announce a 1 MiB
// CONNECT (within max_packet_size) and send a few bytes must not make the
// broker allocate what they announce: the process grows by less than 64 MiB
// and every socket is closed by the CONNECT deadline (those over
// max_connect_size at once). The same holds for sockets announcing a
// CONNECT just under max_connect_size.
func TestPreConnectMemoryPinning(t *testing.T) {
	const sockets = 1000
	raiseFileLimit(t, 3*sockets)
	tmpl := derive(baseCaddyfile, "\t\tconnect_timeout 1s\n\t\tmax_packet_size 64KiB\n",
		"\t\tconnect_timeout 4s\n\t\tmax_packet_size 4MiB\n")
	c := startCaddyWith(t, tmpl, CaddyConfig{Ports: freePorts(t)})
	c.ConnectV5(t, "tcp", "warm-up").Publish(t, "warm/up", 1, false, []byte("x"))
	base := c.RSS()

	// Twice 1 MiB: the second round finds the heap the first one used, which
	// must be zeroed (touched) when allocated again.
	for _, announce := range []int{1 << 20, 60 << 10, 1 << 20} {
		start := time.Now()
		conns := make([]net.Conn, 0, sockets)
		for i := range sockets {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TCP), 5*time.Second)
			if err != nil {
				t.Fatalf("socket %d: %v", i, err)
			}
			defer conn.Close()
			// The fixed header and the start of a CONNECT, then silence.
			head := append([]byte{0x10}, varint(announce)...)
			head = append(head, appendString(nil, "MQTT")...)
			head = append(head, 5, 0x02, 0, 30, 0)
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write(head) // the broker may already have closed it
			conns = append(conns, conn)
		}
		var peak int64
		for range 10 {
			peak = max(peak, c.RSS())
			time.Sleep(100 * time.Millisecond)
		}
		grew := peak - base
		t.Logf("%d sockets announcing %d bytes: RSS %d MiB -> %d MiB (+%d MiB), opened in %v",
			sockets, announce, base>>20, peak>>20, grew>>20, time.Since(start).Round(time.Millisecond))
		if grew >= 64<<20 {
			t.Errorf("%d sockets announcing %d bytes grew the process by %d MiB (limit 64 MiB)", sockets, announce, grew>>20)
		}
		var open atomic.Int32
		var wg sync.WaitGroup
		for _, conn := range conns {
			wg.Go(func() {
				_ = conn.SetReadDeadline(start.Add(4*time.Second + 10*time.Second))
				if _, err := io.Copy(io.Discard, conn); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						open.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if n := open.Load(); n > 0 {
			t.Errorf("%d of %d sockets announcing %d bytes still open well after connect_timeout", n, sockets, announce)
		}
		t.Logf("all closed %v after the first was opened", time.Since(start).Round(time.Millisecond))
	}
	// Still serving.
	c.ConnectV5(t, "tcp", "after").Publish(t, "after/flood", 1, false, []byte("x"))
}

// connackWithin sends p on conn and returns the CONNACK's code and how long
// it took; code 0xFF means the connection was closed without one.
func connackWithin(t testing.TB, conn net.Conn, p []byte, limit time.Duration) (byte, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(limit))
	if _, err := conn.Write(p); err != nil {
		return 0xFF, time.Since(start)
	}
	var head [2]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil || head[0] != 0x20 || head[1] < 2 {
		return 0xFF, time.Since(start)
	}
	body := make([]byte, head[1])
	if _, err := io.ReadFull(conn, body); err != nil {
		return 0xFF, time.Since(start)
	}
	return body[1], time.Since(start)
}

// TestLoginFloodDoesNotStarveOtherLogins: 200 CONNECTs with bogus
// passwords against an argon2id password file, all in flight at once, must
// not keep a client with a verified certificate (which needs no password
// check) nor a client with the right password (from another address) from
// connecting within 1 s (the latter: plus its own login time). The flood
// is answered, not left hanging: "bad username or password" or "server
// busy" (v5 0x89, v3 return code 3), and the refusals are counted in the
// log.
func TestLoginFloodDoesNotStarveOtherLogins(t *testing.T) {
	needTool(t, "openssl")
	raiseFileLimit(t, 1000)
	dir := t.TempDir()
	ca, _, cert, key := opensslDeviceCA(t, dir, "", "device-1")
	hash, err := auth.HashPasswordArgon2id("alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "passwd")
	writeFile(t, pw, "alice:"+hash+"\n")
	c := startIdentityCaddy(t, ca, "password_file "+pw+"\n\t\tuse_identity_as_username")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}

	// One argon2id check takes tens of ms on an idle machine and much
	// longer on a loaded one: the right-password client gets 1 s plus
	// twice its own login time without the flood.
	var alone time.Duration
	for i := range 3 {
		conn := dialFrom(t, "127.0.0.3", c.Ports.TCP)
		code, took := connackWithin(t, conn, loginPacket(5, fmt.Sprint("alone-", i), "alice", "alice-pw"), 10*time.Second)
		conn.Close()
		if code != 0 {
			t.Fatalf("right password without a flood: code %#x", code)
		}
		alone = max(alone, took)
	}
	passwordLimit := time.Second + 2*alone

	const flood = 200
	type answer struct {
		version, code byte
		took          time.Duration
	}
	answers := make(chan answer, flood)
	for i := range flood {
		version := byte(4 + i%2)
		conn := dialFrom(t, "127.0.0.1", c.Ports.TCP)
		defer conn.Close()
		go func() {
			code, took := connackWithin(t, conn, loginPacket(version, fmt.Sprintf("bogus-%d", i), "alice", fmt.Sprintf("wrong-%d", i)), 30*time.Second)
			answers <- answer{version, code, took}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the flood is in flight

	cfg := c.TLSConfig("mqtt")
	cfg.Certificates = []tls.Certificate{pair}
	tlsConn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TLS), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tlsConn.Close()
	if code, took := connackWithin(t, tlsConn, connectPacket(5, "device-1"), 10*time.Second); code != 0 || took > time.Second {
		t.Errorf("client with a verified certificate during the flood: code %#x after %v, want 0 within 1s", code, took)
	} else {
		t.Logf("certificate client connected in %v", took)
	}
	good := dialFrom(t, "127.0.0.2", c.Ports.TCP)
	defer good.Close()
	if code, took := connackWithin(t, good, loginPacket(5, "alice-ok", "alice", "alice-pw"), 10*time.Second); code != 0 || took > passwordLimit {
		t.Errorf("right password from another address during the flood: code %#x after %v, want 0 within %v", code, took, passwordLimit)
	} else {
		t.Logf("password client connected in %v (%v without the flood)", took, alone)
	}

	busy := map[byte]int{}
	for range flood {
		a := <-answers
		switch {
		case a.version == 5 && (a.code == 0x86 || a.code == 0x89), a.version == 4 && (a.code == 5 || a.code == 3):
			if a.code == 0x89 || a.code == 3 {
				busy[a.version]++
			}
		default:
			t.Fatalf("bogus v%d login: code %#x after %v, want bad credentials or server busy", a.version, a.code, a.took)
		}
	}
	if busy[4] == 0 || busy[5] == 0 {
		t.Errorf("no flood login was answered with server busy (v3 %d, v5 %d)", busy[4], busy[5])
	}
	if !strings.Contains(c.Log(), `"failed_logins"`) {
		t.Error("refused logins are not counted in the log")
	}
}

// waitDisconnect waits for a server DISCONNECT with reason code want.
func waitDisconnect(t *testing.T, v *V5, who string, want byte) {
	t.Helper()
	select {
	case d := <-v.Disconnect:
		if d.ReasonCode != want {
			t.Errorf("%s: DISCONNECT %#x, want %#x", who, d.ReasonCode, want)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("%s: still connected 10 s after the reload", who)
	}
}

// TestReloadRevokesSessions: `caddy reload` re-authorises every live
// session against the new configuration. A user removed from the password
// file, a user whose password changed and an anonymous client once
// allow_anonymous is off are disconnected (v5 DISCONNECT 0x87, v3 closed);
// an unchanged user stays. A door that gains its own password file drops
// the sessions it had let in under the broker-wide one.
func TestReloadRevokesSessions(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	alice, bob, carol, eve := "alice:"+hashPassword(t, "alice-pw"), "bob:"+hashPassword(t, "bob-pw"),
		"carol:"+hashPassword(t, "carol-pw"), "eve:"+hashPassword(t, "eve-pw")
	writeFile(t, pw, strings.Join([]string{alice, bob, carol, eve}, "\n")+"\n")
	cfg := CaddyConfig{Ports: freePorts(t), Extra: "allow_anonymous\n\t\tpassword_file " + pw}
	c := startCaddyWith(t, authCaddyfile, cfg)

	va := c.ConnectV5(t, "tcp", "alice", withLogin("alice", "alice-pw"))
	vb := c.ConnectV5(t, "ws", "bob", withLogin("bob", "bob-pw"))
	vc := c.ConnectV5(t, "tcp", "carol", withLogin("carol", "carol-pw"))
	vw := c.ConnectV5(t, "ws", "carol-ws", withLogin("carol", "carol-pw"))
	anon := c.ConnectV5(t, "tcp", "anon")
	ve := c.ConnectV3(t, "tcp", "eve", func(o *pahov3.ClientOptions) { o.SetUsername("eve").SetPassword("eve-pw") })

	// alice and eve removed, bob's password changed, carol unchanged,
	// anonymous access off.
	writeFile(t, pw, carol+"\n"+"bob:"+hashPassword(t, "new-bob-pw")+"\n")
	reloadWith(t, c, authCaddyfile, CaddyConfig{Extra: "password_file " + pw})
	waitDisconnect(t, va, "removed user", 0x87)
	waitDisconnect(t, vb, "changed password", 0x87)
	waitDisconnect(t, anon, "anonymous client", 0x87)
	deadline := time.Now().Add(10 * time.Second)
	for ve.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if ve.IsConnected() {
		t.Error("removed MQTT 3 user still connected")
	}
	if rc := publishReason(t, vc, "carol/a"); rc != 0 || vc.Lost.Load() {
		t.Fatalf("unchanged user after the reload: publish %#x, lost %v", rc, vc.Lost.Load())
	}
	if rc := tryV5(t, c, "tcp", "bob", "new-bob-pw"); rc != 0 {
		t.Errorf("bob with his new password: %#x", rc)
	}
	if !strings.Contains(c.Log(), `"msg":"mqtt reload disconnected sessions the new configuration no longer allows","count":4`) {
		t.Errorf("the count of disconnected sessions is not logged:\n%s", tail(c.Log(), 20))
	}

	// The tcp door gets its own password file: carol's tcp session was let
	// in under the broker-wide file and goes; her ws session stays.
	doorPw, acl := filepath.Join(dir, "door.passwd"), filepath.Join(dir, "door.acl")
	writeFile(t, doorPw, carol+"\n")
	writeFile(t, acl, "user carol\ntopic readwrite #\n")
	reloadWith(t, c, doorAuthCaddyfile(doorPw, acl), CaddyConfig{Extra: "password_file " + pw})
	waitDisconnect(t, vc, "session of a door that gained a password file", 0x87)
	if rc := publishReason(t, vw, "carol/b"); rc != 0 || vw.Lost.Load() {
		t.Fatalf("session of an unchanged door: publish %#x, lost %v", rc, vw.Lost.Load())
	}
	c.ConnectV5(t, "tcp", "carol-again", withLogin("carol", "carol-pw"))
}

// TestAnonymousClientCannotClaimAUsersACL: with allow_anonymous and no
// password file, a client that sends the username "admin" without any
// password gets the anonymous ACL rules, not admin's; Caddy warns about the
// combination when it loads the config.
func TestAnonymousClientCannotClaimAUsersACL(t *testing.T) {
	c := startCaddy(t, `acl {
			topic read public/#
			topic write public/#
			user admin
			topic readwrite admin/#
		}`)
	fake := c.ConnectV5(t, "tcp", "not-admin", func(cp *paho.Connect) { cp.Username, cp.UsernameFlag = "admin", true })
	if rc := publishReason(t, fake, "admin/config"); rc != 0x87 {
		t.Errorf("anonymous client claiming admin publishes to admin/config: %#x, want 0x87", rc)
	}
	if rc := publishReason(t, fake, "public/x"); rc != 0 {
		t.Errorf("anonymous client publishes to public/x: %#x, want 0", rc)
	}
	if !strings.Contains(c.Log(), "allow_anonymous without password_file or users") {
		t.Error("no warning about allow_anonymous without a password source")
	}
}

// TestDoorMaxConnectionsPerHandler: two plain MQTT listeners with
// max_connections 1 each admit one client each; a door's limit is not
// shared with the other handlers of its kind.
func TestDoorMaxConnectionsPerHandler(t *testing.T) {
	tmpl := derive(baseCaddyfile, `		127.0.0.1:{{.TCP}} {
			route {
				mqtt
			}
		}
		127.0.0.1:{{.TLS}} {
			@tls tls
			route @tls {
				tls {
					connection_policy {
						alpn mqtt x-amzn-mqtt-ca
						default_sni localhost
					}
				}
				mqtt
			}
		}`, `		127.0.0.1:{{.TCP}} {
			route {
				mqtt {
					max_connections 1
				}
			}
		}
		127.0.0.1:{{.TLS}} {
			route {
				mqtt {
					max_connections 1
				}
			}
		}`)
	c := startCaddyWith(t, tmpl, CaddyConfig{Ports: freePorts(t)})
	for _, port := range []int{c.Ports.TCP, c.Ports.TLS} {
		conn := dialFrom(t, "127.0.0.1", port)
		defer conn.Close()
		if code, _ := connackWithin(t, conn, connectPacket(5, fmt.Sprint("first-", port)), 5*time.Second); code != 0 {
			t.Fatalf("first client of the listener on %d: %#x, want 0", port, code)
		}
	}
	// Each door's second connection is over its own limit.
	conn := dialFrom(t, "127.0.0.1", c.Ports.TCP)
	defer conn.Close()
	if code, _ := connackWithin(t, conn, connectPacket(5, "second"), 5*time.Second); code != 0xFF {
		t.Fatalf("second client of a max_connections 1 door: %#x, want closed", code)
	}
}

// TestIPv6ConnectionRatePer64: max_connection_rate counts an IPv6 client
// per /64, the block one host usually holds, not per address: the third
// connection from the same /64 within the interval is refused, one from
// another /64 is not. (Addresses come from the PROXY protocol.)
func TestIPv6ConnectionRatePer64(t *testing.T) {
	c := startCaddyWith(t, limitsTemplate, CaddyConfig{Ports: freePorts(t), Extra: "max_connection_rate 2 1m"})
	for i, src := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3", "2001:db8:1:3::1"} {
		conn := dialFrom(t, "127.0.0.1", c.Ports.TCP)
		defer conn.Close()
		write(t, conn, []byte(fmt.Sprintf("PROXY TCP6 %s ::1 40000 %d\r\n", src, c.Ports.TCP)))
		code, _ := connackWithin(t, conn, connectPacket(5, fmt.Sprint("v6-", i)), 5*time.Second)
		refused := code == 0xFF
		if want := i == 2; refused != want {
			t.Errorf("connection %d from %s: refused %v (code %#x), want %v", i+1, src, refused, code, want)
		}
	}
}

// TestCertForceNeverWritesKeyIntoOldFile: `caddy mqtt cert --force` over an
// existing, world-readable client_key.pem must not write the new private
// key into that file: whoever opened it while it was readable (or holds a
// hard link) would read the new key.
func TestCertForceNeverWritesKeyIntoOldFile(t *testing.T) {
	c := startCaddy(t, "")
	out := t.TempDir()
	keyPath := filepath.Join(out, "client_key.pem")
	writeFile(t, keyPath, "old key\n")
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	reader, err := os.Open(keyPath) // opened while readable by anyone
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if o, err := caddyCmd(t, c, "", "mqtt", "cert", "--ca", "local", "--cn", "dev", "--out", out, "--force"); err != nil {
		t.Fatalf("caddy mqtt cert --force: %v\n%s", err, o)
	}
	seen, err := io.ReadAll(reader)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(seen), "PRIVATE KEY") {
		t.Fatal("the new private key was written into the existing, readable file")
	}
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("client_key.pem: %v, mode %v", err, st.Mode().Perm())
	}
	if b, _ := os.ReadFile(keyPath); !strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatal("client_key.pem does not hold the new key")
	}
}

// anyOriginCaddyfile: the WSS site verifies client certificates if given
// and its broker door allows every origin; @EXTRA@ goes into the door.
var anyOriginCaddyfile = derive(baseCaddyfile, `https://localhost:{{.HTTPS}} {
	mqtt /mqtt
`, `https://localhost:{{.HTTPS}} {
	tls {
		client_auth {
			mode verify_if_given
			trust_pool file @CA@
		}
	}
	mqtt /mqtt {
		allowed_origins *
		@EXTRA@
	}
`)

// TestAnyOriginWithClientCertificateRefused: a browser sends its user's
// client certificate with any page's WebSocket, so allowed_origins "*"
// would let any web site the device owner visits act as the device
// (cross-site WebSocket hijacking). Such a cross-site upgrade is refused;
// without a certificate "*" still admits it; insecure_any_origin restores
// the old behaviour; and "*" together with usernames from certificates is
// a config error.
func TestAnyOriginWithClientCertificateRefused(t *testing.T) {
	needTool(t, "openssl")
	dir := t.TempDir()
	ca, _, cert, key := opensslDeviceCA(t, dir, "", "device-1")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	conf := func(extra string) string {
		return strings.NewReplacer("@CA@", ca, "@EXTRA@", extra).Replace(anyOriginCaddyfile)
	}
	cfg := CaddyConfig{Ports: freePorts(t)}
	c := startCaddyWith(t, conf(""), cfg)
	upgrade := func(withCert bool) error {
		tc := c.TLSConfig()
		if withCert {
			tc.Certificates = []tls.Certificate{pair}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, c.URL("wss"), &websocket.DialOptions{
			Subprotocols: []string{"mqtt"},
			HTTPHeader:   http.Header{"Origin": {"https://evil.example"}},
			HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: tc}},
		})
		if err == nil {
			ws.Close(websocket.StatusNormalClosure, "")
		}
		return err
	}
	if err := upgrade(true); err == nil {
		t.Error("cross-site WebSocket upgrade with a client certificate accepted under allowed_origins *")
	}
	if err := upgrade(false); err != nil {
		t.Errorf("cross-site upgrade without a certificate under allowed_origins *: %v", err)
	}
	reloadWith(t, c, conf("insecure_any_origin"), cfg)
	if err := upgrade(true); err != nil {
		t.Errorf("insecure_any_origin: cross-site upgrade with a certificate refused: %v", err)
	}

	bad := filepath.Join(dir, "Caddyfile")
	writeFile(t, bad, render(t, conf("use_identity_as_username"), cfg))
	o, err := caddyCmd(t, c, "", "validate", "--config", bad, "--adapter", "caddyfile")
	if err == nil || !strings.Contains(o, "cross-site WebSocket hijacking") {
		t.Fatalf(`allowed_origins "*" with use_identity_as_username: caddy validate %v, want the hijacking error:\n%s`, err, o)
	}
}

// deviceCACaddyfile configures the dedicated device CA in the pki app and
// has both certificate doors trust only it. "ca local" is listed so that
// skip_install_trust covers it too: Caddy applies skip_install_trust only to
// the CAs of the pki block once there is one, and would install the
// implicit local CA's root into the system trust store.
var deviceCACaddyfile = derive(strings.ReplaceAll(identityCaddyfile, "trust_pool file @CA@", "trust_pool pki_root mqtt-devices"),
	"\tskip_install_trust\n", "\tskip_install_trust\n\tpki {\n\t\tca local\n\t\tca mqtt-devices {\n\t\t\tname \"MQTT devices\"\n\t\t}\n\t}\n")

// TestDeviceCertificatesFromDedicatedCA: `caddy mqtt cert` signs with the
// pki app's "mqtt-devices" CA by default, and a door that trusts that CA
// (trust_pool pki_root mqtt-devices) accepts the device but neither a
// certificate of Caddy's "local" CA nor Caddy's own server certificate
// for localhost, which `trust_pool pki_root local` would have let in as
// user "localhost".
func TestDeviceCertificatesFromDedicatedCA(t *testing.T) {
	c := startCaddyWith(t, deviceCACaddyfile, CaddyConfig{Ports: freePorts(t), Extra: "allow_anonymous\n\t\tuse_identity_as_username"})
	dev, local := filepath.Join(t.TempDir(), "dev"), filepath.Join(t.TempDir(), "local")
	if o, err := caddyCmd(t, c, "", "mqtt", "cert", "--cn", "device-7", "--out", dev); err != nil {
		t.Fatalf("caddy mqtt cert: %v\n%s", err, o)
	}
	if o, err := caddyCmd(t, c, "", "mqtt", "cert", "--ca", "local", "--cn", "not-a-device", "--out", local); err != nil {
		t.Fatalf("caddy mqtt cert --ca local: %v\n%s", err, o)
	}
	if issuer := readCert(t, filepath.Join(dev, "client_cert.pem")).Issuer.CommonName; !strings.Contains(issuer, "MQTT devices") {
		t.Errorf("device certificate issued by %q, want the MQTT devices CA", issuer)
	}
	if _, err := os.Stat(filepath.Join(dev, "server_ca.pem")); err != nil {
		t.Errorf("no server_ca.pem for verifying the server: %v", err)
	}
	serverLeaf := filepath.Join(c.dir, "data", "caddy", "certificates", "local", "localhost", "localhost")
	for _, tc := range []struct {
		name, cert, key string
		want            bool
	}{
		{"device certificate", filepath.Join(dev, "client_cert.pem"), filepath.Join(dev, "client_key.pem"), true},
		{"certificate of the local CA", filepath.Join(local, "client_cert.pem"), filepath.Join(local, "client_key.pem"), false},
		{"Caddy's own server certificate", serverLeaf + ".crt", serverLeaf + ".key", false},
	} {
		pair, err := tls.LoadX509KeyPair(tc.cert, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.TLSConfig("mqtt")
		cfg.Certificates = []tls.Certificate{pair}
		code := byte(0xFF)
		if conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TLS), cfg); err == nil {
			code, _ = connackWithin(t, conn, connectPacket(5, "cert-"+tc.name[:6]), 5*time.Second)
			conn.Close()
		}
		if got := code == 0; got != tc.want {
			t.Errorf("%s on the door trusting mqtt-devices: accepted %v (code %#x), want %v", tc.name, got, code, tc.want)
		}
	}
}

// TestBcryptCostOverCapRefusedByValidate: `caddy validate` refuses a
// password file with a bcrypt line whose cost (here 31, days per check)
// would make every login for that user a denial of service, naming the
// file and line.
func TestBcryptCostOverCapRefusedByValidate(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	// A well-formed bcrypt hash with its cost field raised to 31.
	writeFile(t, pw, "alice:"+hashPassword(t, "alice-pw")+"\n"+
		"mallory:$2a$31$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy\n")
	conf := filepath.Join(dir, "Caddyfile")
	writeFile(t, conf, render(t, authCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: "password_file " + pw}))
	cmd := exec.Command(caddyBin, "validate", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), pw+":2:") || !strings.Contains(string(out), "bcrypt cost 31") {
		t.Fatalf("caddy validate: %v, want an error naming %s:2 and the cost:\n%s", err, pw, out)
	}
}

// TestReloadDoorAllowAnonymousOff: a reload that turns a door's own
// allow_anonymous off disconnects the anonymous sessions that came in
// through it; anonymous sessions of other doors stay.
func TestReloadDoorAllowAnonymousOff(t *testing.T) {
	cfg := CaddyConfig{Ports: freePorts(t)}
	c := startCaddyWith(t, baseCaddyfile, cfg)
	ws := c.ConnectV5(t, "ws", "anon-ws")
	tcp := c.ConnectV5(t, "tcp", "anon-tcp")
	closed := derive(baseCaddyfile, "http://localhost:{{.HTTP}} {\n\tmqtt /mqtt\n",
		"http://localhost:{{.HTTP}} {\n\tmqtt /mqtt {\n\t\tallow_anonymous false\n\t}\n")
	reloadWith(t, c, closed, cfg)
	waitDisconnect(t, ws, "anonymous session of the door that turned allow_anonymous off", 0x87)
	if rc := publishReason(t, tcp, "still/here"); rc != 0 || tcp.Lost.Load() {
		t.Fatalf("anonymous session of another door: publish %#x, lost %v", rc, tcp.Lost.Load())
	}
	if rc := tryV5(t, c, "ws", "", ""); rc != 0x87 && rc != 0x86 {
		t.Errorf("new anonymous client on the closed door: %#x, want refused", rc)
	}
}
