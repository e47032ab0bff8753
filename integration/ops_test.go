package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// opsCaddyfile is the base config with a password file (user "u") and the
// tcp door named "plain", so metrics carry the labels plain, tls, ws and wss.
var opsCaddyfile = derive(baseCaddyfile,
	"\t\tallow_anonymous\n", "\t\tpassword_file {{.Extra}}\n\t\tsys_interval 1s\n",
	"\t\t{{.Extra}}\n", "",
	"\t\t\troute {\n\t\t\t\tmqtt\n\t\t\t}", "\t\t\troute {\n\t\t\t\tmqtt {\n\t\t\t\t\tname plain\n\t\t\t\t}\n\t\t\t}",
)

// opsDoors are the doors and their metric labels.
var opsDoors = map[string]string{"tcp": "plain", "tls": "tls", "ws": "ws", "wss": "wss"}

func startOpsCaddy(t *testing.T) *Caddy {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, pw, "u:"+hashPassword(t, "pw")+"\n")
	return startCaddyWith(t, opsCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: pw})
}

func (c *Caddy) admin(t *testing.T, method, path string, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", c.Ports.Admin, path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// metrics fetches /metrics from the admin endpoint and returns the value of
// every series, keyed as written: name{label="v",...}.
func (c *Caddy) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := c.admin(t, http.MethodGet, "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_mqtt_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// waitMetric polls /metrics until series has value want.
func (c *Caddy) waitMetric(t *testing.T, series string, want float64) {
	t.Helper()
	var got float64
	var ok bool
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got, ok = c.metrics(t)[series]; ok && got == want {
			return
		}
	}
	t.Fatalf("%s = %v (present %v), want %v", series, got, ok, want)
}

func login(user, password string) func(*paho.Connect) {
	return func(cp *paho.Connect) {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(password), true
	}
}

// opsWorkload runs, on every door: one subscriber and two publishers (3
// clients), 100 QoS 1 messages, one refused login. It returns the clients.
func opsWorkload(t *testing.T, c *Caddy, round int) []*V5 {
	t.Helper()
	var clients []*V5
	for door := range opsDoors {
		sub := c.ConnectV5(t, door, fmt.Sprintf("sub-%s-%d", door, round), login("u", "pw"))
		sub.Subscribe(t, "load/"+door+"/#", 1)
		p1 := c.ConnectV5(t, door, fmt.Sprintf("p1-%s-%d", door, round), login("u", "pw"))
		p2 := c.ConnectV5(t, door, fmt.Sprintf("p2-%s-%d", door, round), login("u", "pw"))
		for i := range 50 {
			p1.Publish(t, "load/"+door+"/a", 1, false, []byte("0123456789"))
			p2.Publish(t, "load/"+door+"/b", 1, false, []byte("0123456789"))
			_ = i
		}
		for i := range 100 {
			select {
			case <-sub.Msgs:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: subscriber got %d of 100", door, i)
			}
		}
		if code := tryV5(t, c, door, "u", "Xyzzy-bad-42"); code != 0x86 {
			t.Fatalf("%s: bad password gave %#x", door, code)
		}
		clients = append(clients, sub, p1, p2)
	}
	return clients
}

// TestMetricsOnAdminEndpoint: after a scripted workload on each door the
// admin endpoint's /metrics shows exact values per door; after `caddy
// reload` the same counters go on counting. The connect and disconnect log
// lines carry the client's fields.
func TestMetricsOnAdminEndpoint(t *testing.T) {
	c := startOpsCaddy(t)
	check := func(round float64, connected float64) {
		t.Helper()
		for _, label := range opsDoors {
			l := fmt.Sprintf(`door=%q`, label)
			c.waitMetric(t, `caddy_mqtt_clients_connected{`+l+`}`, connected)
			m := c.metrics(t)
			for series, want := range map[string]float64{
				`caddy_mqtt_connections_accepted_total{` + l + `}`:               3 * round,
				`caddy_mqtt_connections_refused_total{` + l + `,reason="auth"}`:  round,
				`caddy_mqtt_messages_received_total{` + l + `,qos="1"}`:          100 * round,
				`caddy_mqtt_messages_sent_total{` + l + `,qos="1"}`:              100 * round,
				`caddy_mqtt_payload_received_bytes_total{` + l + `,qos="1"}`:     1000 * round,
				`caddy_mqtt_payload_sent_bytes_total{` + l + `,qos="1"}`:         1000 * round,
				`caddy_mqtt_messages_received_total{` + l + `,qos="0"}`:          0,
				`caddy_mqtt_auth_duration_seconds_count{` + l + `}`:              4 * round,
				`caddy_mqtt_disconnects_total{` + l + `,reason="normal"}`:        3*round - connected,
				`caddy_mqtt_connections_refused_total{` + l + `,reason="acl"}`:   0,
				`caddy_mqtt_session_takeovers_total{` + l + `}`:                  0,
				`caddy_mqtt_auth_duration_seconds_bucket{` + l + `,le="+Inf"}`:   4 * round,
				`caddy_mqtt_connections_refused_total{` + l + `,reason="limit"}`: 0,
				`caddy_mqtt_disconnects_total{` + l + `,reason="eof"}`:           0,
				`caddy_mqtt_messages_dropped_total{reason="queue_full"}`:         0,
				`caddy_mqtt_retained_messages`:                                   0,
			} {
				if got, ok := m[series]; !ok || got != want {
					t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
				}
			}
			if m[`caddy_mqtt_received_bytes_total{`+l+`}`] < 100*round*(2+2+12+10) {
				t.Errorf("%s: received bytes %v, fewer than the publishes", label, m[`caddy_mqtt_received_bytes_total{`+l+`}`])
			}
		}
	}

	clients := opsWorkload(t, c, 1)
	check(1, 3)

	for _, v := range clients {
		_ = v.Client.Disconnect(&paho.Disconnect{})
	}
	check(1, 0)

	// Log lines of the connect and the disconnect of one client, in
	// Caddy's JSON log, without passwords.
	log := c.Log()
	for _, want := range [][]string{
		{`"logger":"mqtt.broker"`, `"msg":"mqtt client connected"`, `"client":"p1-tcp-1"`, `"username":"u"`, `"door":"plain"`, `"remote":"127.0.0.1:`, `"protocol":5`, `"session_present":false`},
		{`"logger":"mqtt.broker"`, `"msg":"mqtt client disconnected"`, `"client":"p1-tcp-1"`, `"username":"u"`, `"door":"plain"`, `"remote":"127.0.0.1:`, `"protocol":5`, `"session_present":false`, `"reason":"normal"`},
		{`"level":"warn"`, `"msg":"mqtt connection refused"`, `"username":"u"`, `"door":"wss"`, `"reason":"auth"`},
	} {
		if !logHasLine(log, want...) {
			t.Errorf("no log line with %q", want)
		}
	}
	if strings.Contains(log, `"pw"`) || strings.Contains(log, "Xyzzy-bad-42") || strings.Contains(log, "0123456789") {
		t.Error("a password or payload is in the log")
	}

	// A reload (the body changes, so Caddy loads a new config with a new
	// metrics registry): the counters go on.
	pw := filepath.Join(c.dir, "passwd2")
	writeFile(t, pw, "u:"+hashPassword(t, "pw")+"\n")
	reloadWith(t, c, opsCaddyfile, CaddyConfig{Extra: pw})
	opsWorkload(t, c, 2)
	check(2, 3)
	if strings.Contains(c.Log(), "duplicate metrics collector registration") {
		t.Error("metrics registered twice")
	}

	// $SYS goes on next to the metrics, every sys_interval (1s here): 12
	// clients and the watcher.
	sys := c.ConnectV5(t, "tcp", "sys-watch", login("u", "pw"))
	sys.Subscribe(t, "$SYS/broker/clients/connected", 0)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if m := recv(t, sys.Msgs); string(m.Payload) == "13" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("$SYS/broker/clients/connected never said 13")
		}
	}
}

type adminClient struct {
	ID             string     `json:"id"`
	Username       string     `json:"username"`
	Door           string     `json:"door"`
	Remote         string     `json:"remote"`
	Protocol       int        `json:"protocol"`
	Connected      bool       `json:"connected"`
	ConnectedSince *time.Time `json:"connected_since"`
	Subscriptions  int        `json:"subscriptions"`
	SubList        []struct {
		Filter string `json:"filter"`
		QoS    byte   `json:"qos"`
	} `json:"subscription_list"`
}

// TestAdminAPI: list and inspect a client on each door, kick with 0x98,
// discard a persistent session, publish with QoS, retain and properties,
// manage retained messages, and every bad input gets its 4xx with a JSON
// error.
func TestAdminAPI(t *testing.T) {
	c := startOpsCaddy(t)
	byDoor := map[string]*V5{}
	for door := range opsDoors {
		v := c.ConnectV5(t, door, "adm-"+door, login("u", "pw"))
		v.Subscribe(t, "cmd/"+door+"/#", 2)
		byDoor[door] = v
	}
	code, body := c.admin(t, http.MethodGet, "/mqtt/clients", "")
	if code != http.StatusOK {
		t.Fatalf("list: %d %s", code, body)
	}
	var list []adminClient
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	seen := map[string]adminClient{}
	for _, ci := range list {
		seen[ci.ID] = ci
	}
	for door, label := range opsDoors {
		ci, ok := seen["adm-"+door]
		if !ok || ci.Door != label || ci.Username != "u" || ci.Protocol != 5 || !ci.Connected ||
			ci.ConnectedSince == nil || ci.Subscriptions != 1 || !strings.HasPrefix(ci.Remote, "127.0.0.1:") {
			t.Errorf("%s: listed as %+v", door, ci)
		}
	}
	code, body = c.admin(t, http.MethodGet, "/mqtt/clients/adm-tls", "")
	var one adminClient
	if err := json.Unmarshal(body, &one); code != 200 || err != nil || len(one.SubList) != 1 ||
		one.SubList[0].Filter != "cmd/tls/#" || one.SubList[0].QoS != 2 {
		t.Errorf("client adm-tls: %d %s", code, body)
	}

	// Publish: QoS 1, retained, with MQTT 5 properties.
	code, body = c.admin(t, http.MethodPost, "/mqtt/publish", `{"topic":"cmd/ws/reboot","payload":"now","qos":1,"retain":true,
		"properties":{"content_type":"text/plain","response_topic":"resp/ws","correlation_data":"`+base64.StdEncoding.EncodeToString([]byte{1, 2, 3})+`",
		"user_properties":[{"key":"by","value":"ops"}],"payload_format_indicator":1}}`)
	if code != http.StatusNoContent {
		t.Fatalf("publish: %d %s", code, body)
	}
	m := recv(t, byDoor["ws"].Msgs)
	if string(m.Payload) != "now" || m.QoS != 1 || m.Topic != "cmd/ws/reboot" || m.Properties == nil ||
		m.Properties.ContentType != "text/plain" || m.Properties.ResponseTopic != "resp/ws" ||
		string(m.Properties.CorrelationData) != "\x01\x02\x03" || m.Properties.User.Get("by") != "ops" {
		t.Fatalf("received %+v props %+v", m, m.Properties)
	}
	// Base64 payload at QoS 2 to the tcp door's client.
	code, body = c.admin(t, http.MethodPost, "/mqtt/publish", `{"topic":"cmd/tcp/x","payload":"`+base64.StdEncoding.EncodeToString([]byte{0, 0xff})+`","encoding":"base64","qos":2}`)
	if code != http.StatusNoContent {
		t.Fatalf("publish base64: %d %s", code, body)
	}
	if m := recv(t, byDoor["tcp"].Msgs); string(m.Payload) != "\x00\xff" || m.QoS != 2 || m.Retain {
		t.Fatalf("received %+v", m)
	}
	// A late subscriber gets the retained message with its retain flag.
	late := c.ConnectV5(t, "wss", "late", login("u", "pw"))
	late.Subscribe(t, "cmd/ws/#", 1)
	if m := recv(t, late.Msgs); string(m.Payload) != "now" || !m.Retain {
		t.Fatalf("late subscriber got %+v", m)
	}
	code, body = c.admin(t, http.MethodGet, "/mqtt/retained?filter=cmd/%23", "")
	if code != 200 || !strings.Contains(string(body), `"topic":"cmd/ws/reboot"`) || !strings.Contains(string(body), `"payload":"bm93"`) {
		t.Fatalf("retained: %d %s", code, body)
	}
	if code, body = c.admin(t, http.MethodDelete, "/mqtt/retained/cmd/ws/reboot", ""); code != http.StatusNoContent {
		t.Fatalf("delete retained: %d %s", code, body)
	}
	if code, body = c.admin(t, http.MethodGet, "/mqtt/retained?filter=%23", ""); code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("retained after delete: %d %s", code, body)
	}

	// Bad input: each gets its 4xx and a JSON error.
	big := strings.Repeat("x", 70<<10) // max_packet_size is 64KiB
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/mqtt/clients/nobody", "", 404},
		{"DELETE", "/mqtt/clients/nobody", "", 404},
		{"DELETE", "/mqtt/clients/adm-tcp?session=maybe", "", 400},
		{"POST", "/mqtt/publish", `{"topic":"a/+/b","payload":"x"}`, 400},
		{"POST", "/mqtt/publish", `{"topic":"a/#","payload":"x"}`, 400},
		{"POST", "/mqtt/publish", `{"topic":"","payload":"x"}`, 400},
		{"POST", "/mqtt/publish", `{"topic":"$SYS/x","payload":"x"}`, 400},
		{"POST", "/mqtt/publish", `{"topic":"a","payload":"x","qos":3}`, 400},
		{"POST", "/mqtt/publish", `{"topic":"a","payload":"!!","encoding":"base64"}`, 400},
		{"POST", "/mqtt/publish", `{"topic":"a","payload":"x","nonsense":1}`, 400},
		{"POST", "/mqtt/publish", `{"topic":`, 400},
		{"POST", "/mqtt/publish", `{"topic":"a","payload":"` + big + `"}`, 413},
		{"GET", "/mqtt/publish", "", 405},
		{"GET", "/mqtt/retained?filter=a/%23/b", "", 400},
		{"DELETE", "/mqtt/retained/nothing/here", "", 404},
		{"DELETE", "/mqtt/retained/a/+", "", 400},
		{"GET", "/mqtt/nothing", "", 404},
	} {
		code, body := c.admin(t, tc.method, tc.path, tc.body)
		var e struct {
			Error string `json:"error"`
		}
		if code != tc.want || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("%s %s %.60s: %d %s, want %d with a JSON error", tc.method, tc.path, tc.body, code, body, tc.want)
		}
	}

	// Kick: each MQTT 5 client gets DISCONNECT 0x98.
	for door := range opsDoors {
		if code, body := c.admin(t, http.MethodDelete, "/mqtt/clients/adm-"+door, ""); code != http.StatusNoContent {
			t.Fatalf("kick %s: %d %s", door, code, body)
		}
		select {
		case d := <-byDoor[door].Disconnect:
			if d.ReasonCode != 0x98 {
				t.Errorf("%s: disconnect reason %#x, want 0x98", door, d.ReasonCode)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: no DISCONNECT after kick", door)
		}
	}
	c.waitMetric(t, `caddy_mqtt_disconnects_total{door="plain",reason="admin"}`, 1)

	// A persistent session: kicking keeps it, ?session=discard drops it.
	persistent := func(cp *paho.Connect) {
		login("u", "pw")(cp)
		cp.CleanStart = false
		exp := uint32(300)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	p := c.ConnectV5(t, "tcp", "keeper", persistent)
	p.Subscribe(t, "keep/#", 1)
	if code, body := c.admin(t, http.MethodDelete, "/mqtt/clients/keeper", ""); code != http.StatusNoContent {
		t.Fatalf("kick keeper: %d %s", code, body)
	}
	waitSession := func(connected bool) adminClient {
		t.Helper()
		var ci adminClient
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			code, body := c.admin(t, http.MethodGet, "/mqtt/clients/keeper", "")
			if code == 200 && json.Unmarshal(body, &ci) == nil && ci.Connected == connected {
				return ci
			}
		}
		t.Fatalf("keeper never connected=%v", connected)
		return ci
	}
	if ci := waitSession(false); ci.Subscriptions != 1 {
		t.Fatalf("kept session: %+v", ci)
	}
	if code, body := c.admin(t, http.MethodDelete, "/mqtt/clients/keeper", ""); code != http.StatusConflict {
		t.Fatalf("kick a disconnected session: %d %s, want 409", code, body)
	}
	if code, body := c.admin(t, http.MethodDelete, "/mqtt/clients/keeper?session=discard", ""); code != http.StatusNoContent {
		t.Fatalf("discard: %d %s", code, body)
	}
	if code, _ := c.admin(t, http.MethodGet, "/mqtt/clients/keeper", ""); code != 404 {
		t.Fatalf("discarded session still listed: %d", code)
	}
	conn := c.Dial(t, "tcp")
	v := connectV5Over(t, conn, "tcp", "keeper", persistent)
	_ = v
	if ci := waitSession(true); ci.Subscriptions != 0 {
		t.Fatalf("session came back after discard: %+v", ci)
	}
}

// TestAdminCLI: caddy mqtt clients, kick and pub against a running Caddy.
func TestAdminCLI(t *testing.T) {
	c := startOpsCaddy(t)
	addr := fmt.Sprintf("127.0.0.1:%d", c.Ports.Admin)
	sub := c.ConnectV5(t, "wss", "cli-sub", login("u", "pw"))
	sub.Subscribe(t, "cli/#", 1)
	v3 := c.ConnectV3(t, "tcp", "cli-v3", func(o *pahov3.ClientOptions) { o.SetUsername("u").SetPassword("pw") })

	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(caddyBin, append([]string{"mqtt"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("caddy mqtt %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("clients", "--address", addr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CLIENT ID") {
		t.Fatalf("clients table:\n%s", out)
	}
	for _, want := range [][]string{{"cli-sub", "u", "wss", "127.0.0.1:", "5"}, {"cli-v3", "u", "plain", "3.1.1"}} {
		found := false
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) > 4 && f[0] == want[0] && f[1] == want[1] && f[2] == want[2] && strings.HasPrefix(f[3], "127.0.0.1:") && f[4] == want[len(want)-1] {
				found = true
			}
		}
		if !found {
			t.Errorf("no row %v in\n%s", want, out)
		}
	}

	out = run("pub", "--address", addr, "-q", "1", "-r", "--user-property", "k=v", "cli/x", "hello")
	if !strings.Contains(out, "published 5 bytes") {
		t.Errorf("pub output: %s", out)
	}
	if m := recv(t, sub.Msgs); string(m.Payload) != "hello" || m.QoS != 1 || m.Properties.User.Get("k") != "v" {
		t.Fatalf("subscriber got %+v", m)
	}

	run("kick", "--address", addr, "cli-sub")
	select {
	case d := <-sub.Disconnect:
		if d.ReasonCode != 0x98 {
			t.Errorf("kick reason %#x", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Error("no DISCONNECT after caddy mqtt kick")
	}
	run("kick", "--address", addr, "cli-v3")
	for deadline := time.Now().Add(5 * time.Second); !v3.Lost.Load(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("MQTT 3 client still connected after kick")
		}
	}

	// Errors reach the operator.
	out2, err := exec.Command(caddyBin, "mqtt", "kick", "--address", addr, "nobody").CombinedOutput()
	if err == nil || !strings.Contains(string(out2), "404") {
		t.Errorf("kick nobody: %v\n%s", err, out2)
	}
}
