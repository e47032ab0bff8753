package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key}
}

// issue signs a client certificate with the given raw subject.
func (ca *testCA) issue(t *testing.T, subject pkix.RDNSequence) tls.Certificate {
	t.Helper()
	raw, err := asn1.Marshal(subject)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		RawSubject:   raw,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func atv(oid asn1.ObjectIdentifier, v any) pkix.AttributeTypeAndValue {
	return pkix.AttributeTypeAndValue{Type: oid, Value: v}
}

var (
	oidC  = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidE  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidDC = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
)

// TestSubjectRFC2253MatchesOpenSSL compares SubjectRFC2253 with what
// `openssl x509 -nameopt RFC2253` prints, which is the function mosquitto's
// use_subject_as_username calls (X509_NAME_print_ex, XN_FLAG_RFC2253).
func TestSubjectRFC2253MatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	ca := newTestCA(t, "Test CA")
	subjects := []pkix.RDNSequence{
		{{atv(oidCommonName, "device.example_corp")}},
		{{atv(oidC, "DE")}, {atv(oidO, "Example, Inc.")}, {atv(oidOU, "Sensors")}, {atv(oidCommonName, "dev-1")}},
		{{atv(oidDC, "com")}, {atv(oidDC, "example")}, {atv(oidCommonName, `quote" back\ plus+ semi; <lt> =eq`)}},
		{{atv(oidCommonName, "#hash first")}, {atv(oidO, " lead and trail ")}},
		{{atv(oidCommonName, "Grüße 日本")}, {atv(oidE, "a@example.com")}},
		{{atv(oidO, "Multi"), atv(oidOU, "Valued")}, {atv(oidCommonName, "x")}},
		{{atv(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, "private")}, {atv(oidCommonName, "y")}},
	}
	dir := t.TempDir()
	for i, s := range subjects {
		cert := ca.issue(t, s)
		path := filepath.Join(dir, "c.pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(openssl, "x509", "-in", path, "-noout", "-subject", "-nameopt", "RFC2253").Output()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(strings.TrimPrefix(string(out), "subject="), "\n")
		got, err := SubjectRFC2253(cert.Leaf.RawSubject)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("subject %d:\n got %q\nwant %q", i, got, want)
		}
	}
}

func TestCertUsername(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	cert := ca.issue(t, pkix.RDNSequence{{atv(oidO, "Example")}, {atv(oidCommonName, "first")}, {atv(oidCommonName, "second")}})
	verified := &tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{cert.Leaf},
		VerifiedChains:   [][]*x509.Certificate{{cert.Leaf, ca.cert}},
	}
	if got, err := CertUsername(verified, IdentityCN); err != nil || got != "first" {
		t.Errorf("CN = %q, %v; want the first CN, as mosquitto takes it", got, err)
	}
	if got, err := CertUsername(verified, IdentitySubject); err != nil || got != "CN=second,CN=first,O=Example" {
		t.Errorf("subject = %q, %v", got, err)
	}
	// client_auth "request"/"require": a certificate was sent but nobody
	// checked who issued it.
	unverified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	for _, st := range []*tls.ConnectionState{nil, {}, unverified} {
		if got, err := CertUsername(st, IdentityCN); err == nil {
			t.Errorf("unverified state gave username %q", got)
		}
	}
	for _, s := range []pkix.RDNSequence{
		{{atv(oidO, "no CN")}},
		{{atv(oidCommonName, "")}},
		{{atv(oidCommonName, "nul\x00byte")}},
	} {
		c := ca.issue(t, s)
		st := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c.Leaf, ca.cert}}}
		if got, err := CertUsername(st, IdentityCN); err == nil {
			t.Errorf("subject %v gave username %q", s, got)
		}
	}
}

// TestCertIdentityOverTLS runs the broker behind a real TLS listener and a
// real MQTT 5 client: the username comes from the verified certificate (not
// from CONNECT), a pattern ACL with %u proves it, and a door whose TLS
// accepts unverified certificates does not get to name the user.
func TestCertIdentityOverTLS(t *testing.T) {
	ca := newTestCA(t, "Device CA")
	serverCert := ca.issue(t, pkix.RDNSequence{{atv(oidCommonName, "localhost")}})
	acl, err := auth.ParseACLFile(strings.NewReader("pattern readwrite devices/%u/#\n"), "acl")
	if err != nil {
		t.Fatal(err)
	}
	b := newBroker(t, Options{}, &AuthPolicy{ACL: acl, Identity: IdentityCN})

	listen := func(clientAuth tls.ClientAuthType) string {
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert)
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientAuth:   clientAuth,
			ClientCAs:    pool,
		})
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
				go func() {
					tc := conn.(*tls.Conn)
					if tc.Handshake() != nil {
						tc.Close()
						return
					}
					st := tc.ConnectionState()
					_ = b.Serve(tc, ConnInfo{Door: DoorTLS, TLS: &st})
					tc.Close()
				}()
			}
		}()
		return l.Addr().String()
	}
	connect := func(addr string, cert tls.Certificate, username string) (*paho.Client, *paho.Connack, error) {
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert)
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cert}})
		if err != nil {
			return nil, nil, err
		}
		// paho.golang writes a packet in pieces, and its pinger sends a
		// PINGREQ as soon as it starts: over TLS (one record per piece) the
		// PINGREQ could land inside the first PUBLISH, which the broker then
		// rightly refused as malformed. Locked, the pieces stay together.
		c := paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: conn}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cp := &paho.Connect{ClientID: "c-" + username, KeepAlive: 30, CleanStart: true}
		if username != "" {
			cp.Username, cp.UsernameFlag = username, true
		}
		ca, err := c.Connect(ctx, cp)
		if err == nil {
			t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		}
		return c, ca, err
	}
	device := ca.issue(t, pkix.RDNSequence{{atv(oidCommonName, "device.example_corp")}})

	verifying := listen(tls.RequireAndVerifyClientCert)
	// The CONNECT username "intruder" is replaced by the certificate's CN.
	c, _, err := connect(verifying, device, "intruder")
	if err != nil {
		t.Fatalf("connect with a verified certificate: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Publish(ctx, &paho.Publish{Topic: "devices/device.example_corp/t", QoS: 1, Payload: []byte("x")})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("publish to own topic: %v %v", ack, err)
	}
	ack, err = c.Publish(ctx, &paho.Publish{Topic: "devices/intruder/t", QoS: 1, Payload: []byte("x")})
	// paho reports a refused publish as an error next to the PUBACK.
	if ack == nil || ack.ReasonCode != 0x87 {
		t.Fatalf("publish to the CONNECT username's topic: %v %v, want reason 0x87", ack, err)
	}

	// "require" checks nothing: the same certificate gives no identity and
	// the client is refused, as mosquitto refuses a client without one.
	unverifying := listen(tls.RequireAnyClientCert)
	_, ca2, err := connect(unverifying, device, "")
	if err == nil || ca2 == nil || ca2.ReasonCode != 0x86 {
		t.Fatalf("unverified certificate: connack %v, err %v; want reason 0x86", ca2, err)
	}
	// Counted as a TLS refusal, not a bad password.
	col := NewCollector(func() *Broker { return b })
	waitFor(t, func() bool {
		return gather(t, col, "caddy_mqtt_connections_refused_total", map[string]string{"door": "tls", "reason": "tls"}) == 1
	})
	if v := gather(t, col, "caddy_mqtt_connections_refused_total", map[string]string{"door": "tls", "reason": "auth"}); v != 0 {
		t.Errorf("refused for auth: %v", v)
	}
}

// lockedConn makes paho.golang write each packet whole: it locks a
// connection that is a sync.Locker around the pieces of a packet (only a TCP
// socket writes those in one piece by itself).
type lockedConn struct {
	net.Conn
	sync.Mutex
}
