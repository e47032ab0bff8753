package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho "github.com/eclipse/paho.golang/paho"
)

// identityCaddyfile requires a client certificate from the device CA
// (@CA@) on the MQTT/TLS door, and verifies one if given on the WSS site
// (so browsers and the harness can still connect without one).
var identityCaddyfile = derive(authCaddyfile,
	"\t\t\t\t\t\t{{.Body}}\n", `						client_auth {
							mode require_and_verify
							trust_pool file @CA@
						}
`,
	`https://localhost:{{.HTTPS}} {
	mqtt /mqtt
`, `https://localhost:{{.HTTPS}} {
	tls {
		client_auth {
			mode verify_if_given
			trust_pool file @CA@
		}
	}
	mqtt /mqtt {
		use_identity_as_username
	}
`)

// identityACL lets anonymous observers read, and only the device's
// certificate name write.
const identityACL = `allow_anonymous
		use_identity_as_username
		acl {
			topic read "#"
			user device.example_corp
			topic write secure/topic
			pattern write devices/%u/status
		}`

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// opensslDeviceCA follows the classic recipe users copy: an openssl CA and
// a client certificate signed with `openssl x509 -req -CAcreateserial`.
func opensslDeviceCA(t *testing.T, dir, prefix, cn string) (caCert, caKey, cert, key string) {
	t.Helper()
	caCert, caKey = filepath.Join(dir, prefix+"ca.pem"), filepath.Join(dir, prefix+"ca_key.pem")
	cert, key = filepath.Join(dir, prefix+"client_cert.pem"), filepath.Join(dir, prefix+"client_key.pem")
	csr := filepath.Join(dir, prefix+"client.csr")
	run(t, "openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", caCert,
		"-days", "30", "-subj", "/CN="+prefix+"Device CA")
	run(t, "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN="+cn)
	run(t, "openssl", "x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-CAcreateserial", "-out", cert, "-days", "30")
	return
}

// signWithFiles signs a certificate for cn with a CA read from PEM files,
// valid from notBefore to notAfter, for validity cases openssl x509 -req
// cannot produce (an expired certificate).
func signWithFiles(t *testing.T, caCertPath, caKeyPath, dir, cn string, notBefore, notAfter time.Time) (certPath, keyPath string) {
	t.Helper()
	caCert := readCert(t, caCertPath)
	b, _ := os.ReadFile(caKeyPath)
	blk, _ := pem.Decode(b)
	caKey, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, cn+"_cert.pem"), filepath.Join(dir, cn+"_key.pem")
	writeFile(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startIdentityCaddy runs identityCaddyfile trusting caPath.
func startIdentityCaddy(t *testing.T, caPath, extra string) *Caddy {
	t.Helper()
	return startCaddyWith(t, strings.ReplaceAll(identityCaddyfile, "@CA@", caPath), CaddyConfig{Ports: freePorts(t), Extra: extra})
}

// mosquittoPubTLS publishes one QoS 1 message over the MQTT/TLS door with
// a client certificate (none when cert is "").
func mosquittoPubTLS(c *Caddy, cert, key, topic, msg string, extra ...string) ([]byte, error) {
	args := []string{"-h", "localhost", "-p", fmt.Sprint(c.Ports.TLS), "--cafile", c.RootPath(),
		"-t", topic, "-m", msg, "-q", "1", "-i", "pub-" + msg}
	if cert != "" {
		args = append(args, "--cert", cert, "--key", key)
	}
	return exec.Command("mosquitto_pub", append(args, extra...)...).CombinedOutput()
}

// TestMTLSOpenSSLRecipe: a device certificate made with the classic openssl
// recipe works with mosquitto_pub over the TLS door, the broker knows the
// client as its CN (it may write where only that username may, even when
// it claims another username in CONNECT), and connections with no
// certificate, one from another CA, or an expired one fail the handshake.
func TestMTLSOpenSSLRecipe(t *testing.T) {
	needTool(t, "mosquitto_pub")
	needTool(t, "openssl")
	dir := t.TempDir()
	ca, caKey, cert, key := opensslDeviceCA(t, dir, "", "device.example_corp")
	c := startIdentityCaddy(t, ca, identityACL)

	observer := c.ConnectV5(t, "tcp", "observer")
	observer.Subscribe(t, "secure/#", 1)
	observer.Subscribe(t, "devices/#", 1)

	// Another certificate of the same CA: a valid identity, but not the
	// one the ACL lets write secure/topic.
	otherCert, otherKey := signWithFiles(t, ca, caKey, dir, "other.device", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	// MQTT 5 so that the refusal is a PUBACK 0x87, which mosquitto_pub
	// reports; mochi disconnects an MQTT 3 client instead (mosquitto would
	// acknowledge and drop the message).
	out, _ := mosquittoPubTLS(c, otherCert, otherKey, "secure/topic", "denied", "-V", "mqttv5")
	if !strings.Contains(string(out), "not authorized") && !strings.Contains(string(out), "Not authorized") {
		t.Fatalf("other.device publishing to secure/topic: want a 'not authorized' PUBACK, got:\n%s", out)
	}
	if out, err := mosquittoPubTLS(c, cert, key, "secure/topic", "allowed", "-u", "intruder"); err != nil {
		t.Fatalf("mosquitto_pub with the openssl device certificate: %v\n%s", err, out)
	}
	if out, err := mosquittoPubTLS(c, cert, key, "devices/device.example_corp/status", "up"); err != nil {
		t.Fatalf("mosquitto_pub to the %%u pattern: %v\n%s", err, out)
	}
	for _, want := range []string{"secure/topic allowed", "devices/device.example_corp/status up"} {
		m := recv(t, observer.Msgs)
		if got := m.Topic + " " + string(m.Payload); got != want {
			t.Fatalf("observer got %q, want %q (other.device's publish must be dropped)", got, want)
		}
	}

	// Refused at the handshake: mosquitto_pub fails before MQTT starts.
	_, otherCAKey, foreignCert, foreignKey := opensslDeviceCA(t, dir, "other-", "device.example_corp")
	_ = otherCAKey
	expiredCert, expiredKey := signWithFiles(t, ca, caKey, dir, "expired.device", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	for _, bad := range []struct{ name, cert, key string }{
		{"no certificate", "", ""},
		{"certificate from another CA", foreignCert, foreignKey},
		{"expired certificate", expiredCert, expiredKey},
	} {
		out, err := mosquittoPubTLS(c, bad.cert, bad.key, "secure/topic", "bad")
		if err == nil {
			t.Errorf("%s: mosquitto_pub succeeded:\n%s", bad.name, out)
		}
	}
	// And a Go client sees the handshake itself fail.
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.TLS), c.TLSConfig("mqtt"))
	if err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1)) // TLS 1.3: the server's verdict comes after the client's Finished
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("TLS without a client certificate: %v, want a 'certificate required' alert", err)
	}
	select {
	case m := <-observer.Msgs:
		t.Fatalf("observer got %s %q from a refused client", m.Topic, m.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestMTLSWebSocket: on the WSS site (client_auth verify_if_given plus the
// door's use_identity_as_username) a Go client with the device certificate
// is known by its CN; one without a certificate gets through the handshake
// but is refused at CONNECT, since that door takes names only from
// certificates.
func TestMTLSWebSocket(t *testing.T) {
	needTool(t, "openssl")
	dir := t.TempDir()
	ca, _, certPath, keyPath := opensslDeviceCA(t, dir, "", "device.example_corp")
	// Only the per-door setting on the HTTP directive is on here.
	c := startIdentityCaddy(t, ca, `allow_anonymous
		acl {
			topic read "#"
			user device.example_corp
			topic write secure/topic
		}`)
	observer := c.ConnectV5(t, "tcp", "observer")
	observer.Subscribe(t, "secure/#", 1)

	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	dialWSS := func(withCert bool) *paho.Client {
		cfg := c.TLSConfig()
		if withCert {
			cfg.Certificates = []tls.Certificate{cert}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, c.URL("wss"), &websocket.DialOptions{
			Subprotocols: []string{"mqtt"},
			HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}},
		})
		if err != nil {
			t.Fatal(err)
		}
		conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
		return paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: conn}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	anon := dialWSS(false)
	ca2, _ := anon.Connect(ctx, &paho.Connect{ClientID: "wss-anon", KeepAlive: 30, CleanStart: true})
	if ca2 == nil || ca2.ReasonCode != 0x86 {
		t.Fatalf("WSS without a certificate: %v, want CONNACK 0x86", ca2)
	}

	dev := dialWSS(true)
	ack, err := dev.Connect(ctx, &paho.Connect{ClientID: "wss-dev", KeepAlive: 30, CleanStart: true})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("WSS with the device certificate: %v %v", ack, err)
	}
	defer dev.Disconnect(&paho.Disconnect{})
	resp, err := dev.Publish(ctx, &paho.Publish{Topic: "secure/topic", QoS: 1, Payload: []byte("via wss")})
	if err != nil || resp.ReasonCode != 0 {
		t.Fatalf("publish as device.example_corp: %v %v", resp, err)
	}
	if m := recv(t, observer.Msgs); string(m.Payload) != "via wss" {
		t.Fatalf("observer got %q", m.Payload)
	}
}

// caddyCmd runs the Caddy binary under test with c's data directory, as an
// operator on the same machine would.
func caddyCmd(t *testing.T, c *Caddy, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(caddyBin, args...)
	cmd.Env = c.env()
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestMQTTCertCommand: `caddy mqtt cert` issues a device certificate from
// the pki app's mqtt-devices CA that mosquitto_pub (MQTT/TLS door,
// trust_pool pki_root mqtt-devices) and a Go client (WSS) both use, and the
// broker knows the client by the certificate's CN. Its server_ca.pem
// verifies the server.
func TestMQTTCertCommand(t *testing.T) {
	needTool(t, "mosquitto_pub")
	c := startCaddyWith(t, deviceCACaddyfile, CaddyConfig{Ports: freePorts(t), Extra: identityACL})
	observer := c.ConnectV5(t, "tcp", "observer")
	observer.Subscribe(t, "secure/#", 1)

	out := filepath.Join(t.TempDir(), "device")
	if o, err := caddyCmd(t, c, "", "mqtt", "cert", "--cn", "device.example_corp", "--out", out, "--days", "30"); err != nil {
		t.Fatalf("caddy mqtt cert: %v\n%s", err, o)
	}
	if o, err := caddyCmd(t, c, "", "mqtt", "cert", "--cn", "device.example_corp", "--out", out); err == nil {
		t.Fatalf("caddy mqtt cert overwrote existing files:\n%s", o)
	}
	cert, key, caPEM := filepath.Join(out, "client_cert.pem"), filepath.Join(out, "client_key.pem"), filepath.Join(out, "server_ca.pem")
	leaf := readCert(t, cert)
	if leaf.Subject.CommonName != "device.example_corp" || leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("issued %v %v", leaf.Subject, leaf.PublicKeyAlgorithm)
	}
	if d := time.Until(leaf.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Fatalf("valid for %v, want 30 days", d)
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Fatalf("client_key.pem mode %v", st.Mode().Perm())
	}

	// mosquitto_pub verifies the server with server_ca.pem.
	o, err := exec.Command("mosquitto_pub", "-h", "localhost", "-p", fmt.Sprint(c.Ports.TLS), "--cafile", caPEM,
		"--cert", cert, "--key", key, "-t", "secure/topic", "-m", "from mosquitto_pub", "-q", "1").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub with the issued certificate: %v\n%s", err, o)
	}
	if m := recv(t, observer.Msgs); string(m.Payload) != "from mosquitto_pub" {
		t.Fatalf("observer got %q", m.Payload)
	}

	// A Go client over WSS.
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.TLSConfig()
	cfg.Certificates = []tls.Certificate{pair}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, c.URL("wss"), &websocket.DialOptions{
		Subprotocols: []string{"mqtt"},
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}},
	})
	if err != nil {
		t.Fatal(err)
	}
	dev := paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary)}})
	if ack, err := dev.Connect(ctx, &paho.Connect{ClientID: "wss-dev", KeepAlive: 30, CleanStart: true}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("WSS connect with the issued certificate: %v %v", ack, err)
	}
	defer dev.Disconnect(&paho.Disconnect{})
	if resp, err := dev.Publish(ctx, &paho.Publish{Topic: "secure/topic", QoS: 1, Payload: []byte("from wss")}); err != nil || resp.ReasonCode != 0 {
		t.Fatalf("publish as device.example_corp over WSS: %v %v", resp, err)
	}
	if m := recv(t, observer.Msgs); string(m.Payload) != "from wss" {
		t.Fatalf("observer got %q", m.Payload)
	}
}

// TestMQTTPasswdCommand: `caddy mqtt passwd` adds, changes and deletes users
// like mosquitto_passwd, and the file it writes is read by mosquitto 2.0
// itself (12-byte salt) as well as by this broker.
func TestMQTTPasswdCommand(t *testing.T) {
	c := startCaddyWith(t, authCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: "allow_anonymous false"})
	pw := filepath.Join(t.TempDir(), "passwd")
	for _, step := range []struct {
		stdin string
		args  []string
	}{
		{"", []string{"-c", "-b", pw, "alice", "old"}},
		{"", []string{"-b", pw, "bob", "bobpw"}},
		{"", []string{"-b", pw, "alice", "new pw"}}, // change
		{"carolpw\n", []string{pw, "carol"}},        // password from stdin
		{"", []string{"-b", pw, "dave", "davepw"}},
		{"", []string{"-D", pw, "dave"}},
	} {
		if o, err := caddyCmd(t, c, step.stdin, append([]string{"mqtt", "passwd"}, step.args...)...); err != nil {
			t.Fatalf("caddy mqtt passwd %v: %v\n%s", step.args, err, o)
		}
	}
	if o, err := caddyCmd(t, c, "", "mqtt", "passwd", "-b", pw, "eve", "x", "extra"); err == nil {
		t.Fatalf("too many arguments accepted:\n%s", o)
	}
	b, _ := os.ReadFile(pw)
	lines := strings.Fields(string(b))
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "alice:$7$1000$") || !strings.HasPrefix(lines[2], "carol:") {
		t.Fatalf("password file:\n%s", b)
	}
	if st, _ := os.Stat(pw); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}

	// This broker, after a reload that points it at the file.
	reloadWith(t, c, authCaddyfile, CaddyConfig{Extra: "password_file " + pw})
	for user, pass := range map[string]string{"alice": "new pw", "bob": "bobpw", "carol": "carolpw"} {
		if rc := tryV5(t, c, "tcp", user, pass); rc != 0 {
			t.Errorf("%s: reason %#x", user, rc)
		}
	}
	for user, pass := range map[string]string{"alice": "old", "dave": "davepw"} {
		if rc := tryV5(t, c, "tcp", user, pass); rc != 0x86 {
			t.Errorf("%s/%s: reason %#x, want 0x86", user, pass, rc)
		}
	}

	// mosquitto 2.0 itself.
	addr := startMosquitto(t, "allow_anonymous false\npassword_file "+pw+"\n")
	host, port, _ := net.SplitHostPort(addr)
	pub := func(user, pass string) error {
		o, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-u", user, "-P", pass, "-t", "t", "-m", "x").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		return nil
	}
	if err := pub("alice", "new pw"); err != nil {
		t.Fatalf("mosquitto rejected a hash written by caddy mqtt passwd: %v", err)
	}
	if err := pub("alice", "old"); err == nil {
		t.Fatal("mosquitto accepted the old password")
	}
}
