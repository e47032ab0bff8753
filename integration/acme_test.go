package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/dns/dnsmessage"
)

// The certificate tests run a real ACME CA on loopback: Let's Encrypt's test
// CA pebble. Caddy's own acme_server cannot be used here because it (like
// every production CA) validates HTTP-01 on port 80 and TLS-ALPN-01 on port
// 443 only, while pebble takes the ports to validate on (-httpPort/-tlsPort
// in its config), so the broker's Caddy can listen on free loopback ports.
// Pebble resolves the test names through a DNS server given with -dnsserver:
// a tiny one in this process that answers 127.0.0.1 for every A query, so the
// names need no /etc/hosts entry and nothing leaves the machine.

// pebbleVersion is the pebble release the tests use; .ci/run installs it and,
// without it, the tests build it with `go install` (module proxy).
const pebbleVersion = "v2.10.1"

var (
	pebbleOnce sync.Once
	pebblePath string
	pebbleErr  error
)

// pebbleBinary finds pebble: $PEBBLE_BIN, then $PATH, then $GOPATH/bin, and
// otherwise builds it into a temporary folder once per test binary.
func pebbleBinary(t testing.TB) string {
	t.Helper()
	pebbleOnce.Do(func() {
		if p := os.Getenv("PEBBLE_BIN"); p != "" {
			pebblePath = p
			return
		}
		if p, err := exec.LookPath("pebble"); err == nil {
			pebblePath = p
			return
		}
		if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "pebble")
			if _, err := os.Stat(p); err == nil {
				pebblePath = p
				return
			}
		}
		dir, err := os.MkdirTemp("", "caddy-mqtt-pebble")
		if err != nil {
			pebbleErr = err
			return
		}
		cmd := exec.Command("go", "install", "github.com/letsencrypt/pebble/v2/cmd/pebble@"+pebbleVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			pebbleErr = fmt.Errorf("go install pebble: %v\n%s", err, out)
			return
		}
		pebblePath = filepath.Join(dir, "pebble")
	})
	if pebbleErr != nil {
		t.Fatal(pebbleErr)
	}
	return pebblePath
}

func writeTestFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// loopbackPorts returns n free loopback TCP ports.
func loopbackPorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// startLoopbackDNS runs a DNS server over TCP (pebble's resolver uses TCP)
// that answers every A query with 127.0.0.1 and every other query with an
// empty answer. It returns its address.
func startLoopbackDNS(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveDNSConn(conn)
		}
	}()
	return l.Addr().String()
}

func serveDNSConn(conn net.Conn) {
	defer conn.Close()
	for {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		var n uint16
		if err := binary.Read(conn, binary.BigEndian, &n); err != nil {
			return
		}
		req := make([]byte, n)
		if _, err := io.ReadFull(conn, req); err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(req)
		if err != nil {
			return
		}
		q, err := p.Question()
		if err != nil {
			return
		}
		b := dnsmessage.NewBuilder(make([]byte, 2, 512), dnsmessage.Header{
			ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired,
		})
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if q.Type == dnsmessage.TypeA {
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5},
				dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
		}
		msg, err := b.Finish()
		if err != nil {
			return
		}
		binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
		if _, err := conn.Write(msg); err != nil {
			return
		}
	}
}

// selfSignedServerCert writes a certificate and key for 127.0.0.1 and
// localhost: pebble's own HTTPS listener, which Caddy is told to trust with
// acme_ca_root.
func selfSignedServerCert(t testing.TB, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "pebble test listener"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "pebble-listener.crt"), filepath.Join(dir, "pebble-listener.key")
	writeTestFile(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeTestFile(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return certPath, keyPath
}

// Pebble is one running pebble ACME CA.
type Pebble struct {
	Directory   string // ACME directory URL, for acme_ca
	ListenerPEM string // the CA's HTTPS certificate, for acme_ca_root
	mgmt        string
	client      *http.Client
	log         *syncBuffer
}

// startPebble runs pebble issuing certificates valid for validity, and
// validating HTTP-01 on httpPort and TLS-ALPN-01 on tlsPort of 127.0.0.1.
func startPebble(t testing.TB, validity time.Duration, httpPort, tlsPort int) *Pebble {
	t.Helper()
	bin := pebbleBinary(t)
	dir := t.TempDir()
	certPath, keyPath := selfSignedServerCert(t, dir)
	dns := startLoopbackDNS(t)
	ports := loopbackPorts(t, 2)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"certificate":             certPath,
		"privateKey":              keyPath,
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{
			"default": map[string]any{"description": "caddy-mqtt tests", "validityPeriod": int(validity / time.Second)},
		},
	}}
	js, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "pebble.json")
	writeTestFile(t, cfgPath, string(js))

	p := &Pebble{
		Directory:   fmt.Sprintf("https://127.0.0.1:%d/dir", ports[0]),
		ListenerPEM: certPath,
		mgmt:        fmt.Sprintf("https://127.0.0.1:%d", ports[1]),
		log:         new(syncBuffer),
	}
	pool := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(certPath)
	pool.AppendCertsFromPEM(pemBytes)
	p.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	cmd := exec.Command(bin, "-config", cfgPath, "-dnsserver", dns)
	cmd.Dir = dir
	// No random validation sleeps, no reuse of earlier validations (every
	// order is validated for real), no injected bad-nonce errors.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("pebble log:\n%s", tail(p.log.String(), 40))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := p.client.Get(p.Directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-done:
			t.Fatalf("pebble exited:\n%s", p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble not ready: %v\n%s", err, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// IssuerKey is how Caddy's logs name this CA ("127.0.0.1:port-dir").
func (p *Pebble) IssuerKey() string {
	return strings.ReplaceAll(strings.TrimPrefix(p.Directory, "https://"), "/", "-")
}

// Roots is a pool with only pebble's issuing root: what a device would be
// flashed with.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: %v %d", err, resp.StatusCode)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root is not PEM: %q", b)
	}
	return pool
}

// renderWith fills a Caddyfile template from any value.
func renderWith(t testing.TB, tmpl string, data any) string {
	t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// handshake dials 127.0.0.1:port with cfg and returns the connection.
func handshake(port int, cfg *tls.Config) (*tls.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	return conn.(*tls.Conn), nil
}

// waitLeaf retries a verified handshake until it succeeds (the certificate
// is obtained asynchronously) and returns the server's leaf certificate.
func waitLeaf(t testing.TB, c *Caddy, port int, cfg *tls.Config, limit time.Duration) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		conn, err := handshake(port, cfg)
		if err == nil {
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			return leaf
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verified handshake on port %d for %q within %v: %v", port, cfg.ServerName, limit, err)
		}
		select {
		case <-c.done:
			t.Fatalf("caddy exited: %v", c.err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// logHasLine reports whether one line of log contains every part.
func logHasLine(log string, parts ...string) bool {
next:
	for _, line := range strings.Split(log, "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return true
	}
	return false
}

// dialWSSName opens MQTT over WSS to wss://<name>:<port>/mqtt, reaching the
// name at 127.0.0.1 and verifying the certificate with roots. It returns the
// connection and the certificate the server presented.
func dialWSSName(t testing.TB, name string, port int, roots *x509.CertPool) (net.Conn, *x509.Certificate) {
	t.Helper()
	var leaf *x509.Certificate
	var mu sync.Mutex
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
		},
		TLSClientConfig: &tls.Config{
			RootCAs: roots,
			VerifyConnection: func(cs tls.ConnectionState) error {
				mu.Lock()
				leaf = cs.PeerCertificates[0]
				mu.Unlock()
				return nil
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, fmt.Sprintf("wss://%s:%d/mqtt", name, port), &websocket.DialOptions{
		Subprotocols: []string{"mqtt"},
		HTTPClient:   &http.Client{Transport: tr},
	})
	if err != nil {
		t.Fatalf("wss://%s:%d/mqtt: %v", name, port, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), leaf
}

// exchange publishes one message from each client and checks the other one
// receives it.
func exchange(t testing.TB, a, b *V5, topicA, topicB, payload string) {
	t.Helper()
	a.Publish(t, topicB, 1, false, []byte(payload+" from "+a.Door))
	b.Publish(t, topicA, 1, false, []byte(payload+" from "+b.Door))
	for _, x := range []struct {
		v    *V5
		from string
	}{{b, a.Door}, {a, b.Door}} {
		select {
		case m := <-x.v.Msgs:
			if want := payload + " from " + x.from; string(m.Payload) != want {
				t.Fatalf("%s got %q, want %q", x.v.Door, m.Payload, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: message %q not delivered", x.v.Door, payload)
		}
	}
}

// acmeGlobal: the broker's Caddy takes every certificate from the ACME CA
// (pebble). mqtt.example.test is served only by the layer4 tls route and is
// covered by tls_names alone.
const acmeGlobal = `{
	admin 127.0.0.1:{{.Admin}}
	http_port {{.HTTP}}
	https_port {{.HTTPS}}
	default_bind 127.0.0.1
	skip_install_trust
	acme_ca {{.ACME}}
	acme_ca_root {{.ACMERoot}}
	email mqtt-tests@example.test
	{{.Global}}
	mqtt {
		allow_anonymous
		connect_timeout 2s
		tls_names mqtt.example.test
	}
	layer4 {
		127.0.0.1:{{.TLS}} {
			@tls tls
			route @tls {
				tls {
					connection_policy {
						alpn mqtt x-amzn-mqtt-ca
						default_sni mqtt.example.test
					}
				}
				mqtt
			}
		}
	}
}
`

// acmeCaddyfile adds broker.example.test, an HTTPS site (WSS).
const acmeCaddyfile = acmeGlobal + `
broker.example.test {
	mqtt /mqtt
	respond "broker.example.test"
}
`

type acmeConfig struct {
	Ports
	ACME, ACMERoot, Global string
}

func startACMECaddy(t *testing.T, validity time.Duration, global string) (*Caddy, *Pebble) {
	t.Helper()
	ports := freePorts(t)
	pb := startPebble(t, validity, ports.HTTP, ports.HTTPS)
	conf := renderWith(t, acmeCaddyfile, acmeConfig{Ports: ports, ACME: pb.Directory, ACMERoot: pb.ListenerPEM, Global: global})
	c := startCaddyConfig(t, conf, ports, ports.HTTP, ports.HTTPS, ports.TLS)
	return c, pb
}

// TestACMECertificatesOnEveryDoor: the broker's Caddy obtains certificates
// through real ACME orders from a CA on loopback, for the WSS site and for a
// name that only the layer4 MQTT/TLS route serves (tls_names); clients that
// trust only that CA's root connect over MQTT/TLS and WSS, verifying chain
// and host name.
func TestACMECertificatesOnEveryDoor(t *testing.T) {
	start := time.Now()
	c, pb := startACMECaddy(t, time.Hour, "")
	roots := pb.Roots(t)

	mqttTLS := &tls.Config{RootCAs: roots, ServerName: "mqtt.example.test", NextProtos: []string{"mqtt"}}
	leaf := waitLeaf(t, c, c.Ports.TLS, mqttTLS, 60*time.Second)
	if !strings.Contains(leaf.Issuer.CommonName, "Pebble") {
		t.Errorf("mqtt.example.test issued by %q, want pebble", leaf.Issuer.CommonName)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "mqtt.example.test" {
		t.Errorf("layer4-only name: certificate for %v", leaf.DNSNames)
	}
	site := waitLeaf(t, c, c.Ports.HTTPS, &tls.Config{RootCAs: roots, ServerName: "broker.example.test"}, 60*time.Second)
	t.Logf("certificates after %v: %v (serial %x), %v (serial %x), key %T", time.Since(start).Round(time.Millisecond),
		leaf.DNSNames, leaf.SerialNumber, site.DNSNames, site.SerialNumber, leaf.PublicKey)
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("default key type: %T, want ECDSA", leaf.PublicKey)
	}

	// Real orders: Caddy's log shows both certificates obtained from pebble.
	for _, name := range []string{"mqtt.example.test", "broker.example.test"} {
		if !logHasLine(c.Log(), "certificate obtained successfully", `"identifier":"`+name+`"`, pb.IssuerKey()) {
			t.Errorf("no certificate obtained from pebble for %s in the log", name)
		}
	}

	// MQTT over TLS, verifying pebble's chain and the host name.
	tconn, err := handshake(c.Ports.TLS, mqttTLS)
	if err != nil {
		t.Fatal(err)
	}
	if got := tconn.ConnectionState().NegotiatedProtocol; got != "mqtt" {
		t.Errorf("ALPN %q, want mqtt", got)
	}
	overTLS := connectV5Over(t, tconn, "tls", "acme-tls")
	overTLS.Subscribe(t, "acme/tls", 1)

	// MQTT over WSS to broker.example.test.
	wconn, wleaf := dialWSSName(t, "broker.example.test", c.Ports.HTTPS, roots)
	if wleaf == nil || wleaf.DNSNames[0] != "broker.example.test" {
		t.Fatalf("WSS certificate %v", wleaf)
	}
	overWSS := connectV5Over(t, wconn, "wss", "acme-wss")
	overWSS.Subscribe(t, "acme/wss", 1)
	exchange(t, overTLS, overWSS, "acme/tls", "acme/wss", "hello over ACME")

	// A client that connects by IP (no SNI) gets the default_sni certificate.
	noSNI, err := handshake(c.Ports.TLS, &tls.Config{
		InsecureSkipVerify: true, // verified below against the name, as a device flashed with it would
		NextProtos:         []string{"mqtt"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: "mqtt.example.test", Roots: roots, Intermediates: inter})
			return err
		},
	})
	if err != nil {
		t.Fatalf("client without SNI: %v", err)
	}
	noSNI.Close()

	// Control: a name that is neither a site nor in tls_names has no
	// certificate, which is what tls_names is for.
	_, err = handshake(c.Ports.TLS, &tls.Config{RootCAs: roots, ServerName: "other.example.test", NextProtos: []string{"mqtt"}})
	if err == nil {
		t.Fatal("handshake for a name nobody manages succeeded")
	}
	t.Logf("unmanaged name: %v", err)

	// A client trusting only Caddy's internal CA (or the system roots) does
	// not accept the broker: trust is pinned to the ACME CA's root.
	_, err = handshake(c.Ports.TLS, &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "mqtt.example.test", NextProtos: []string{"mqtt"}})
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Errorf("client with an empty trust store: %v, want a verification error", err)
	}
}

// brokerOnlyCaddyfile has no site at all: only the layer4 MQTT/TLS door,
// whose name is in tls_names. Without an HTTP server, Caddy answers the
// ACME challenge with its own short-lived solver on the HTTP (or TLS-ALPN)
// port, which is why such a host still needs port 80 or 443 reachable, or
// DNS-01 (acme_dns) when it has neither.
const brokerOnlyCaddyfile = acmeGlobal

// TestACMEBrokerOnlyHostRSA: a Caddy that serves nothing but MQTT/TLS gets
// its certificate through ACME for the tls_names name, with the global
// key_type (rsa2048, for device TLS stacks without ECDSA) applied to it.
func TestACMEBrokerOnlyHostRSA(t *testing.T) {
	ports := freePorts(t)
	pb := startPebble(t, time.Hour, ports.HTTP, ports.HTTPS)
	conf := renderWith(t, brokerOnlyCaddyfile, acmeConfig{Ports: ports, ACME: pb.Directory, ACMERoot: pb.ListenerPEM, Global: "key_type rsa2048"})
	c := startCaddyConfig(t, conf, ports, ports.TLS)
	roots := pb.Roots(t)
	cfg := &tls.Config{RootCAs: roots, ServerName: "mqtt.example.test", NextProtos: []string{"mqtt"}}
	leaf := waitLeaf(t, c, c.Ports.TLS, cfg, 60*time.Second)
	if _, ok := leaf.PublicKey.(*rsa.PublicKey); !ok {
		t.Errorf("key_type rsa2048: got a %T key", leaf.PublicKey)
	}
	conn, err := handshake(c.Ports.TLS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := connectV5Over(t, conn, "tls", "broker-only")
	v.Subscribe(t, "only/#", 1)
	v.Publish(t, "only/rsa", 1, false, []byte("rsa"))
	if _, payload, ok := v.next(5 * time.Second); !ok || payload != "rsa" {
		t.Fatalf("loopback message: %q %v", payload, ok)
	}
}

// TestProductionExample runs caddyfile-examples/production.Caddyfile as
// shipped, with example.com renamed to example.test, the ports moved to free
// loopback ones and pebble as the ACME CA: the device (sensor-1, on the
// MQTT/TLS door and on 1883) and the dashboard (on WSS) talk within the
// example's ACL, and anonymous clients are refused.
func TestProductionExample(t *testing.T) {
	ports := freePorts(t)
	pb := startPebble(t, time.Hour, ports.HTTP, ports.HTTPS)
	conf := exampleOnLoopback(t, "../caddyfile-examples/production.Caddyfile", ports, pb, "production page",
		"\t\t:8883 {", fmt.Sprintf("\t\t127.0.0.1:%d {", ports.TLS),
		"\t\t:1883 {", fmt.Sprintf("\t\t127.0.0.1:%d {", ports.TCP))
	c := startCaddyConfig(t, conf, ports, ports.HTTP, ports.HTTPS, ports.TLS, ports.TCP)
	roots := pb.Roots(t)
	mqttTLS := &tls.Config{RootCAs: roots, ServerName: "mqtt.example.test", NextProtos: []string{"mqtt"}}
	waitLeaf(t, c, ports.TLS, mqttTLS, 60*time.Second)
	waitLeaf(t, c, ports.HTTPS, &tls.Config{RootCAs: roots, ServerName: "example.test"}, 60*time.Second)

	// The device page is at /devices/, the site's own files elsewhere.
	web := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", ports.HTTPS))
		}}}
	for path, want := range map[string]string{"/devices/": `data-subscribe="devices/#"`, "/": "production page"} {
		resp, err := web.Get("https://example.test" + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, want 200 with %q:\n%s", path, resp.StatusCode, want, body)
		}
	}

	wconn, _ := dialWSSName(t, "example.test", ports.HTTPS, roots)
	dashboard := connectV5Over(t, wconn, "wss", "dashboard", withLogin("dashboard", "change-me-too"))
	dashboard.Subscribe(t, "devices/#", 1)
	tconn, err := handshake(ports.TLS, mqttTLS)
	if err != nil {
		t.Fatal(err)
	}
	sensor := connectV5Over(t, tconn, "tls", "sensor-1", withLogin("sensor-1", "change-me"))
	sensor.Subscribe(t, "devices/sensor-1/set", 1)

	sensor.Publish(t, "devices/sensor-1/state", 1, false, []byte("on"))
	if m := recv(t, dashboard.Msgs); m.Topic != "devices/sensor-1/state" || string(m.Payload) != "on" {
		t.Fatalf("dashboard got %s %q", m.Topic, m.Payload)
	}
	dashboard.Publish(t, "devices/sensor-1/set", 1, false, []byte("off"))
	if m := recv(t, sensor.Msgs); m.Topic != "devices/sensor-1/set" || string(m.Payload) != "off" {
		t.Fatalf("sensor got %s %q", m.Topic, m.Payload)
	}
	if m := recv(t, dashboard.Msgs); string(m.Payload) != "off" { // its own, via devices/#
		t.Fatalf("dashboard got %s %q", m.Topic, m.Payload)
	}
	// The ACL: sensor-1 may not write another device's state.
	if rc := publishReason(t, sensor, "devices/sensor-2/state"); rc < 0x80 {
		t.Errorf("sensor-1 wrote devices/sensor-2/state: reason %#x", rc)
	}

	// Plain 1883 with the same user; anonymous clients are refused.
	raw1883, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports.TCP), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	plain := connectV5Over(t, raw1883, "tcp", "sensor-1-plain", withLogin("sensor-1", "change-me"))
	plain.Publish(t, "devices/sensor-1/state", 1, false, []byte("plain"))
	if m := recv(t, dashboard.Msgs); string(m.Payload) != "plain" {
		t.Fatalf("dashboard got %q", m.Payload)
	}
	anon, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports.TCP), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	write(t, anon, connectPacket(5, "anonymous"))
	if rc := readConnack(t, anon); rc < 0x80 {
		t.Errorf("anonymous client accepted (reason %#x)", rc)
	}
}

// exampleOnLoopback reads a shipped example and points it at this test:
// admin endpoint, HTTP/HTTPS ports and bind address on loopback and pebble
// as the ACME CA (added to the global block, which has `email
// admin@example.com`), example.com renamed example.test, and the web root at
// a temporary page saying page. listeners are more old/new pairs that move
// the example's well-known ports. A piece of the example that is not found
// fails the test, so a change to the example cannot silently skip one.
func exampleOnLoopback(t *testing.T, file string, ports Ports, pb *Pebble, page string, listeners ...string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	www := t.TempDir()
	writeTestFile(t, filepath.Join(www, "index.html"), page)
	pairs := append([]string{
		"\temail admin@example.com\n", fmt.Sprintf("\tadmin 127.0.0.1:%d\n\thttp_port %d\n\thttps_port %d\n\tdefault_bind 127.0.0.1\n"+
			"\tskip_install_trust\n\tacme_ca %s\n\tacme_ca_root %s\n\temail admin@example.test\n",
			ports.Admin, ports.HTTP, ports.HTTPS, pb.Directory, pb.ListenerPEM),
		"/var/www/example.com", www,
		"example.com", "example.test",
	}, listeners...)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(string(raw), pairs[i]) {
			t.Fatalf("%s changed shape: %q not found", file, pairs[i])
		}
	}
	return strings.NewReplacer(pairs...).Replace(string(raw))
}
