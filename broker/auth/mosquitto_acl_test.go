package auth

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestACLMatchesMosquitto is a differential test: the same acl_file is
// loaded into the real mosquitto broker and into ParseACLFile, and for a set
// of clients and topics the messages mosquitto lets through (publish and
// delivery) must be exactly those CanPublish and CanRead allow. Client ids
// with '/' are left out on purpose (documented deviation).
func TestACLMatchesMosquitto(t *testing.T) {
	broker := needTool(t, "mosquitto")
	const aclSrc = `topic read public/#
topic write anon/in
user admin
topic readwrite #
topic readwrite $app/#
user alice
topic readwrite alice/#
topic deny alice/secret/#
topic read shared/+
user a+b
topic readwrite ab/#
pattern readwrite users/%u/#
pattern write devices/%c/telemetry
pattern read devices/%c/cmd/+
pattern deny users/%u/locked/#
pattern read prefix-%u/x
`
	topics := []string{
		"public", "public/news", "anon/in", "alice/x", "alice/secret/y", "alice/secret",
		"shared/1", "shared/1/2", "ab/1", "users/alice/x", "users/alice/locked/z", "users/bob/x",
		"devices/dev1/telemetry", "devices/dev1/cmd/go", "devices/dev2/cmd/go",
		"devices/c1/cmd/go", "prefix-alice/x", "$app/x", "$SYS/broker/x", "other",
	}
	type ident struct{ user, client string }
	idents := []ident{{"", "c1"}, {"alice", "dev1"}, {"bob", "dev2"}, {"a+b", "x1"}, {"alice", "dev+1"}}

	acl, err := ParseACLFile(strings.NewReader(aclSrc), "acl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	aclPath := filepath.Join(dir, "acl")
	conf := filepath.Join(dir, "mosquitto.conf")
	port := freePort(t)
	os.WriteFile(aclPath, []byte(aclSrc), 0o600)
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nacl_file %s\nuser root\npersistence false\n", port, aclPath)), 0o600)
	startMosquitto(t, broker, conf, port)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	collect := func(sub *mqttConn) []string {
		var got []string
		for {
			topic, err := sub.readPublish(700 * time.Millisecond)
			if err != nil {
				sort.Strings(got)
				return got
			}
			got = append(got, topic)
		}
	}
	expect := func(allowed func(topic string) bool) []string {
		var want []string
		for _, tp := range topics {
			if allowed(tp) {
				want = append(want, tp)
			}
		}
		sort.Strings(want)
		return want
	}

	for _, id := range idents {
		// Delivery: id subscribes to everything, admin publishes every topic.
		sub := dialMQTT(t, addr, id.client, id.user)
		sub.subscribe(t, "#", "$app/#", "$SYS/broker/x")
		admin := dialMQTT(t, addr, "admin-pub", "admin")
		for _, tp := range topics {
			admin.publish(t, tp)
		}
		got := collect(sub)
		sub.close()
		admin.close()
		want := expect(func(tp string) bool { return acl.CanRead(id.user, id.client, tp) })
		t.Logf("%+v may read %q", id, got)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("read as %+v:\n mosquitto delivered %q\n CanRead allows     %q", id, got, want)
		}

		// Publish: admin subscribes to everything, id publishes every topic.
		adminSub := dialMQTT(t, addr, "admin-sub", "admin")
		adminSub.subscribe(t, "#", "$app/#")
		pub := dialMQTT(t, addr, id.client, id.user)
		for _, tp := range topics {
			pub.publish(t, tp)
		}
		got = collect(adminSub)
		pub.close()
		adminSub.close()
		want = expect(func(tp string) bool {
			return acl.CanPublish(id.user, id.client, tp) && acl.CanRead("admin", "admin-sub", tp)
		})
		t.Logf("%+v may publish %q", id, got)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("publish as %+v:\n mosquitto accepted %q\n CanPublish allows  %q", id, got, want)
		}
	}
}

// mqttConn is a minimal MQTT 3.1.1 client (QoS 0 only), enough to drive
// mosquitto without adding a client library dependency.
type mqttConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialMQTT(t *testing.T, addr, clientID, user string) *mqttConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := &mqttConn{c: c, r: bufio.NewReader(c)}
	flags := byte(0x02) // clean session
	payload := mqttString(clientID)
	if user != "" {
		flags |= 0x80
		payload = append(payload, mqttString(user)...)
	}
	body := append(append(mqttString("MQTT"), 4, flags, 0, 60), payload...)
	m.send(t, 0x10, body)
	typ, resp := m.read(t, 5*time.Second)
	if typ != 0x20 || len(resp) != 2 || resp[1] != 0 {
		t.Fatalf("CONNECT %q/%q refused: type %#x %v", clientID, user, typ, resp)
	}
	return m
}

func (m *mqttConn) subscribe(t *testing.T, filters ...string) {
	t.Helper()
	body := []byte{0, 1}
	for _, f := range filters {
		body = append(append(body, mqttString(f)...), 0)
	}
	m.send(t, 0x82, body)
	if typ, _ := m.read(t, 5*time.Second); typ != 0x90 {
		t.Fatalf("no SUBACK, got %#x", typ)
	}
}

func (m *mqttConn) publish(t *testing.T, topic string) {
	m.send(t, 0x30, append(mqttString(topic), 'x'))
}

// readPublish returns the topic of the next PUBLISH, or an error after
// quiet of the given length.
func (m *mqttConn) readPublish(quiet time.Duration) (string, error) {
	m.c.SetReadDeadline(time.Now().Add(quiet))
	typ, body, err := m.readPacket()
	if err != nil {
		return "", err
	}
	if typ&0xF0 != 0x30 || len(body) < 2 {
		return "", fmt.Errorf("unexpected packet %#x", typ)
	}
	n := int(binary.BigEndian.Uint16(body))
	return string(body[2 : 2+n]), nil
}

func (m *mqttConn) close() {
	m.c.Write([]byte{0xE0, 0})
	m.c.Close()
}

func (m *mqttConn) send(t *testing.T, typ byte, body []byte) {
	t.Helper()
	pkt := []byte{typ}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	m.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := m.c.Write(append(pkt, body...)); err != nil {
		t.Fatal(err)
	}
}

func (m *mqttConn) read(t *testing.T, timeout time.Duration) (byte, []byte) {
	t.Helper()
	m.c.SetReadDeadline(time.Now().Add(timeout))
	typ, body, err := m.readPacket()
	if err != nil {
		t.Fatal(err)
	}
	return typ, body
}

func (m *mqttConn) readPacket() (byte, []byte, error) {
	typ, err := m.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for {
		b, err := m.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7F) * mult
		if b&0x80 == 0 {
			break
		}
		mult *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(m.r, body)
	return typ, body, err
}

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}
