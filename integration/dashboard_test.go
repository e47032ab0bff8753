package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// dashboardCaddyfile is the base config with the page on the HTTPS site,
// next to the WebSocket door it connects to.
var dashboardCaddyfile = derive(baseCaddyfile,
	"mqtt /mqtt\n\trespond \"wss {{.Body}}\"", "mqtt /mqtt\n\tmqtt_dashboard")

// dashboardACL: web reads and writes everything and reads $SYS; limited may
// only watch the device and switch its LED; the device has its topics;
// tools is what mosquitto_pub/sub log in as.
const dashboardACL = `user web
topic readwrite #
topic read $SYS/#

user limited
topic read async-mqtt/#
topic write async-mqtt/ESP8266/led/set

user esp8266-tcp
topic readwrite async-mqtt/#

user tools
topic readwrite #
`

// browser is a running integration/js/dashboard.mjs: one chromium, any
// number of pages, driven by JSON lines.
type browser struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	mu    sync.Mutex
	next  int
	wait  map[int]chan browserReply
	log   *syncBuffer
	ready chan browserReply
}

type browserReply struct {
	ID     int             `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

// requireChromium returns Debian's chromium, or skips (fails on CI) when it
// or playwright-core is missing.
func requireChromium(t *testing.T) string {
	t.Helper()
	requireNode(t)
	missing := func(why string) {
		msg := why + "; apt-get install chromium and run `npm ci --prefix integration/js` (.ci/run does both)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing("integration/js/node_modules/playwright-core is missing")
	}
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		missing(chromium + " is missing")
	}
	return chromium
}

// trustStore makes an NSS database (what chromium on Linux reads from
// $HOME/.pki/nssdb) trusting the internal CA's root, and only it, to issue
// server certificates, and returns the home directory holding it.
func trustStore(t *testing.T, c *Caddy) string {
	t.Helper()
	certutil := needTool(t, "certutil")
	home := t.TempDir()
	db := "sql:" + filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(filepath.Join(home, ".pki", "nssdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "-d", db, "--empty-password"},
		{"-A", "-d", db, "-n", "caddy-local-root", "-t", "C,,", "-i", c.RootPath()},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
	return home
}

func startBrowser(t *testing.T, chromium, home string) *browser {
	t.Helper()
	node := requireNode(t)
	b := &browser{t: t, wait: map[int]chan browserReply{}, log: new(syncBuffer), ready: make(chan browserReply, 1)}
	b.cmd = exec.Command(node, "dashboard.mjs", chromium)
	b.cmd.Dir = jsDir
	b.cmd.Env = append(os.Environ(), "HOME="+home)
	b.cmd.Stderr = b.log
	var err error
	if b.in, err = b.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r browserReply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				fmt.Fprintf(b.log, "bad reply %q\n", sc.Text())
				continue
			}
			if r.ID == 0 {
				b.ready <- r
				continue
			}
			b.mu.Lock()
			ch := b.wait[r.ID]
			delete(b.wait, r.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- r
			}
		}
	}()
	t.Cleanup(func() {
		b.in.Close() // the script closes chromium and exits at EOF
		done := make(chan struct{})
		go func() { _ = b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = b.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("browser driver log:\n%s", tail(b.log.String(), 60))
		}
	})
	select {
	case r := <-b.ready:
		t.Logf("chromium %s", r.Result)
	case <-time.After(60 * time.Second):
		t.Fatalf("chromium did not start in 60 s:\n%s", b.log.String())
	}
	return b
}

// start sends one command and returns a channel for its reply.
func (b *browser) start(op string, args map[string]any) chan browserReply {
	b.t.Helper()
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan browserReply, 1)
	b.wait[id] = ch
	b.mu.Unlock()
	line, err := json.Marshal(map[string]any{"id": id, "op": op, "args": args})
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.in.Write(append(line, '\n')); err != nil {
		b.t.Fatalf("browser driver: %v\n%s", err, b.log.String())
	}
	return ch
}

// await waits for a reply (bounded) and decodes its result into out.
func (b *browser) await(ch chan browserReply, what string, out any) error {
	b.t.Helper()
	select {
	case r := <-ch:
		if !r.OK {
			return fmt.Errorf("%s: %s", what, r.Error)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-time.After(90 * time.Second):
		b.t.Fatalf("%s: no answer from the browser driver in 90 s", what)
		return nil
	}
}

// do runs one command and fails the test when it fails.
func (b *browser) do(op string, args map[string]any, out any) {
	b.t.Helper()
	if err := b.await(b.start(op, args), op+" "+fmt.Sprint(args), out); err != nil {
		b.t.Fatal(err)
	}
}

// pageLogs is what a page printed on its console, for failure reports.
func (b *browser) pageLogs(name string) string {
	var logs []string
	_ = b.await(b.start("logs", map[string]any{"name": name}), "logs", &logs)
	return strings.Join(logs, "\n")
}

// login fills the page's login form and waits for the main view.
func (b *browser) login(name, user, password string) {
	b.t.Helper()
	b.do("fill", map[string]any{"name": name, "selector": "#username", "value": user}, nil)
	b.do("fill", map[string]any{"name": name, "selector": "#password", "value": password}, nil)
	b.do("click", map[string]any{"name": name, "selector": "#login-button"}, nil)
	if err := b.await(b.start("waitVisible", map[string]any{"name": name, "selector": "#main", "timeout": 20000}), "login", nil); err != nil {
		var msg string
		_ = b.await(b.start("text", map[string]any{"name": name, "selector": "#login-error"}), "text", &msg)
		b.t.Fatalf("%s: login as %s: %v (page says %q)\n%s", name, user, err, msg, b.pageLogs(name))
	}
}

// waitText waits until selector's text contains text on page name.
func (b *browser) waitText(name, selector, text string, timeout time.Duration) {
	b.t.Helper()
	err := b.await(b.start("waitText", map[string]any{"name": name, "selector": selector, "text": text,
		"timeout": timeout.Milliseconds()}), "waitText", nil)
	if err != nil {
		var got string
		_ = b.await(b.start("text", map[string]any{"name": name, "selector": selector}), "text", &got)
		b.t.Fatalf("%s: %s never showed %q (shows %q): %v\n%s", name, selector, text, got, err, b.pageLogs(name))
	}
}

// TestDashboard loads the mqtt_dashboard page in headless chromium over
// HTTPS from Caddy (trusting the internal CA's root through an NSS
// database, with no certificate error ignored), and checks it
// end to end against real clients: mosquitto_pub over the TCP door,
// mosquitto_sub over the TLS door, and the firmware's device simulator.
// The screenshot goes to $DASHBOARD_SCREENSHOT (docs/dashboard.png in the
// repository is made with DASHBOARD_SCREENSHOT=$PWD/../docs/dashboard.png)
// or to the test's temporary directory.
func TestDashboard(t *testing.T) {
	chromium := requireChromium(t)
	needTool(t, "mosquitto_sub")
	sim := deviceSim(t)

	dir := t.TempDir()
	pwfile, aclfile := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	writeFile(t, aclfile, dashboardACL)
	var pw strings.Builder
	for _, u := range []string{"web", "limited", "esp8266-tcp", "tools"} {
		fmt.Fprintf(&pw, "%s:%s\n", u, hashPassword(t, u+"-secret"))
	}
	writeFile(t, pwfile, pw.String())
	c := startCaddyWith(t, dashboardCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: fmt.Sprintf(
		"allow_anonymous false\n\t\tsys_interval 1s\n\t\tpassword_file %s\n\t\tacl_file %s", pwfile, aclfile)})
	pageURL := fmt.Sprintf("https://localhost:%d/", c.Ports.HTTPS)
	tcp := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(c.Ports.TCP), "-u", "tools", "-P", "tools-secret"}
	tls := []string{"-h", "localhost", "-p", fmt.Sprint(c.Ports.TLS), "--cafile", c.RootPath(), "-u", "tools", "-P", "tools-secret"}

	b := startBrowser(t, chromium, trustStore(t, c))

	// The page, with its security headers.
	var opened struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
	}
	b.do("open", map[string]any{"name": "a", "url": pageURL}, &opened)
	if opened.Status != 200 {
		t.Fatalf("GET %s: status %d", pageURL, opened.Status)
	}
	if csp := opened.Headers["content-security-policy"]; !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") ||
		!strings.Contains(csp, fmt.Sprintf("connect-src 'self' wss://localhost:%d;", c.Ports.HTTPS)) {
		t.Errorf("Content-Security-Policy %q", csp)
	}

	// Anonymous clients are not allowed here: the page says so.
	b.do("click", map[string]any{"name": "a", "selector": "#anonymous-button"}, nil)
	b.waitText("a", "#login-error", "Login refused: 0x8", 20*time.Second)

	// A wrong password shows the broker's refusal and keeps the form.
	b.do("fill", map[string]any{"name": "a", "selector": "#username", "value": "web"}, nil)
	b.do("fill", map[string]any{"name": "a", "selector": "#password", "value": "wrong"}, nil)
	b.do("click", map[string]any{"name": "a", "selector": "#login-button"}, nil)
	b.waitText("a", "#login-error", "Login refused: 0x86 Bad user name or password", 20*time.Second)
	var stored any
	b.do("eval", map[string]any{"name": "a", "expr": "sessionStorage.getItem('caddy-mqtt-dashboard-login')"}, &stored)
	if stored != nil {
		t.Errorf("a refused login was remembered: %v", stored)
	}

	b.login("a", "web", "web-secret")
	b.waitText("a", "#sub-result", "Subscribed to #", 10*time.Second)

	// A message published by mosquitto_pub over the TCP door is in the DOM
	// within 1 s of the broker acknowledging it. The page is watched
	// before publishing; both times are this machine's clock.
	seen := b.start("waitText", map[string]any{"name": "a", "selector": `tr[data-topic="sensors/kitchen/temperature"] td.value`,
		"text": "21.5", "timeout": 30000})
	time.Sleep(200 * time.Millisecond) // let the watch start polling
	if out, err := exec.Command("mosquitto_pub", append([]string{"-t", "sensors/kitchen/temperature", "-m", "21.5", "-q", "1"}, tcp...)...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	acked := time.Now()
	var seenAt int64
	if err := b.await(seen, "waitText", &seenAt); err != nil {
		t.Fatalf("the published message never showed: %v\n%s", err, b.pageLogs("a"))
	}
	latency := time.UnixMilli(seenAt).Sub(acked)
	t.Logf("mosquitto_pub → page DOM: %v", latency)
	if latency > time.Second {
		t.Errorf("message showed %v after mosquitto_pub's PUBACK, want within 1 s", latency)
	}
	// A second value makes the topic a chart series.
	if out, err := exec.Command("mosquitto_pub", append([]string{"-t", "sensors/kitchen/temperature", "-m", "22.25", "-q", "1", "-r"}, tcp...)...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	b.waitText("a", `tr[data-topic="sensors/kitchen/temperature"] td.retain`, "retained", 10*time.Second)
	b.waitText("a", "#chart-topic", "sensors/kitchen/temperature", 5*time.Second)

	// A second page, another tab.
	b.do("open", map[string]any{"name": "b", "url": pageURL}, nil)
	b.login("b", "web", "web-secret")

	// The device comes online and publishes its retained state.
	simCtx, stopSim := context.WithCancel(context.Background())
	defer stopSim()
	simCmd := exec.CommandContext(simCtx, sim, "--host", "127.0.0.1", "--port", fmt.Sprint(c.Ports.TCP),
		"--client-id", "esp8266-tcp", "--username", "esp8266-tcp", "--password", "esp8266-tcp-secret",
		"--time-scale", "0.05", "--max-runtime", "120", "--seed", "7")
	simLog := new(syncBuffer)
	simCmd.Stdout, simCmd.Stderr = simLog, simLog
	if err := simCmd.Start(); err != nil {
		t.Fatal(err)
	}
	simDone := make(chan error, 1)
	go func() { simDone <- simCmd.Wait() }()
	var simStop sync.Once
	killSim := func() { simStop.Do(func() { stopSim(); <-simDone }) }
	defer func() {
		killSim()
		if t.Failed() {
			t.Logf("simulator:\n%s", tail(simLog.String(), 40))
		}
	}()
	for _, p := range []string{"a", "b"} {
		b.waitText(p, "#device-status", "online", 30*time.Second)
		b.waitText(p, "#led-state", "off", 10*time.Second)
		b.waitText(p, "#device-messages", "test3", 10*time.Second)
	}
	// Its first date/time tick comes 20 s after connecting, 1 s at this
	// time scale.
	b.waitText("a", "#device-tick", "Z", 20*time.Second)

	// The LED switch publishes the command; mosquitto_sub over the TLS
	// door receives it. -d prints the SUBACK, so the click comes after
	// the subscription is in place (stdbuf: mosquitto_sub's stdio would
	// hold the debug lines back in a pipe's buffer).
	subCtx, stopSub := context.WithTimeout(context.Background(), 60*time.Second)
	defer stopSub()
	sub := exec.CommandContext(subCtx, "stdbuf", append([]string{"-oL", "mosquitto_sub", "-d", "-t", "async-mqtt/ESP8266/led/set", "-q", "1", "-C", "1", "-W", "50"}, tls...)...)
	subOut, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sub.Stderr = sub.Stdout
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	subLines := make(chan string, 64)
	go func() {
		defer close(subLines)
		sc := bufio.NewScanner(subOut)
		for sc.Scan() {
			subLines <- sc.Text()
		}
	}()
	defer func() { stopSub(); _ = sub.Wait() }()
	var subTranscript []string
	readSub := func(want func(string) bool, what string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-subLines:
				if !ok {
					t.Fatalf("mosquitto_sub ended before %s:\n%s", what, strings.Join(subTranscript, "\n"))
				}
				subTranscript = append(subTranscript, l)
				if want(l) {
					return
				}
			case <-timeout:
				t.Fatalf("mosquitto_sub: no %s in 30 s:\n%s", what, strings.Join(subTranscript, "\n"))
			}
		}
	}
	readSub(func(l string) bool { return strings.Contains(l, "received SUBACK") }, "SUBACK")
	b.do("click", map[string]any{"name": "a", "selector": "#led"}, nil)
	readSub(func(l string) bool { return l == "on" }, `the command "on"`)

	// The device switches and publishes its retained state: both pages'
	// switches follow.
	for _, p := range []string{"a", "b"} {
		var at int64
		if err := b.await(b.start("waitChecked", map[string]any{"name": p, "selector": "#led", "value": true, "timeout": 20000}), "waitChecked", &at); err != nil {
			t.Fatalf("page %s: the LED switch did not follow the device: %v\n%s", p, err, b.pageLogs(p))
		}
		b.waitText(p, "#led-state", "on", 5*time.Second)
	}
	if !strings.Contains(simLog.String(), "led state=on") {
		t.Errorf("the simulator did not switch its LED:\n%s", simLog.String())
	}

	// A page of a user whose ACL refuses a topic shows the v5 reason code.
	b.do("open", map[string]any{"name": "c", "url": pageURL}, nil)
	b.login("c", "limited", "limited-secret")
	b.waitText("c", "#sub-result", "Not allowed to read # (0x87 Not authorized). Following async-mqtt/#.", 10*time.Second)
	b.waitText("c", "#sys-note", "Not allowed to read $SYS (0x87 Not authorized)", 10*time.Second)
	b.do("fill", map[string]any{"name": "c", "selector": "#pub-topic", "value": "sensors/kitchen/temperature"}, nil)
	b.do("fill", map[string]any{"name": "c", "selector": "#pub-payload", "value": "99"}, nil)
	b.do("select", map[string]any{"name": "c", "selector": "#pub-qos", "value": "1"}, nil)
	b.do("click", map[string]any{"name": "c", "selector": "#pub-button"}, nil)
	b.waitText("c", "#pub-result", "Refused by the broker: 0x87 Not authorized", 10*time.Second)
	// ... and what its ACL allows still goes through.
	b.do("fill", map[string]any{"name": "c", "selector": "#pub-topic", "value": "async-mqtt/ESP8266/led/set"}, nil)
	b.do("fill", map[string]any{"name": "c", "selector": "#pub-payload", "value": "off"}, nil)
	b.do("click", map[string]any{"name": "c", "selector": "#pub-button"}, nil)
	b.waitText("c", "#pub-result", "Published: 0x00 Success", 10*time.Second)
	b.do("waitChecked", map[string]any{"name": "a", "selector": "#led", "value": false, "timeout": 20000}, nil)

	// The login is remembered for the tab: a reload logs in again by
	// itself. Logging out forgets it and what the page showed.
	b.do("reload", map[string]any{"name": "c"}, nil)
	b.do("waitVisible", map[string]any{"name": "c", "selector": "#main", "timeout": 20000}, nil)
	b.waitText("c", "#whoami", "limited", 5*time.Second)
	b.do("click", map[string]any{"name": "c", "selector": "#logout"}, nil)
	b.do("waitVisible", map[string]any{"name": "c", "selector": "#login", "timeout": 5000}, nil)
	b.do("eval", map[string]any{"name": "c", "expr": "sessionStorage.getItem('caddy-mqtt-dashboard-login')"}, &stored)
	if stored != nil {
		t.Errorf("the login was kept after logging out: %v", stored)
	}
	b.login("c", "web", "web-secret")
	b.waitText("c", "#sub-result", "Subscribed to #.", 10*time.Second)
	var note string
	b.do("text", map[string]any{"name": "c", "selector": "#pub-result"}, &note)
	if note != "" {
		t.Errorf("after logging in again the page still shows %q", note)
	}

	// The broker panel charts $SYS for a user allowed to read it.
	b.waitText("a", "#sys-note", "clients connected", 15*time.Second)
	b.waitText("a", "#sys-note", "messages/s", 15*time.Second)

	// On a phone's width nothing spills sideways.
	b.do("viewport", map[string]any{"name": "b", "width": 390, "height": 844}, nil)
	var overflow bool
	b.do("eval", map[string]any{"name": "b", "expr": "new Promise(r => requestAnimationFrame(() => r(document.documentElement.scrollWidth > document.documentElement.clientWidth)))"}, &overflow)
	if overflow {
		t.Errorf("the page scrolls sideways at 390 px")
	}

	// The screenshot.
	shot := os.Getenv("DASHBOARD_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(dir, "dashboard.png")
	} else if shot, err = filepath.Abs(shot); err != nil {
		t.Fatal(err)
	}
	b.do("screenshot", map[string]any{"name": "a", "path": shot, "fullPage": true}, nil)
	data, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot %s: %dx%d, %d bytes", shot, img.Bounds().Dx(), img.Bounds().Dy(), len(data))

	// The device vanishes (SIGKILL, no DISCONNECT): the broker publishes
	// its will, and the page shows it offline.
	killSim()
	b.waitText("b", "#device-status", "offline", 20*time.Second)

	// Nothing went wrong inside the pages.
	for _, p := range []string{"a", "b", "c"} {
		if logs := b.pageLogs(p); strings.Contains(logs, "pageerror") {
			t.Errorf("page %s threw:\n%s", p, logs)
		}
	}
}

// TestDashboardAnonymous is the page's read-only public view: anonymous
// clients allowed, with an ACL that lets them read the device's topics and
// nothing else. "Continue without login" shows the device's retained state;
// switching the LED is refused by the broker with its reason code, and the
// page keeps showing the device's state, not the wish. (Where anonymous
// clients are not allowed, TestDashboard checks that the page says so.)
func TestDashboardAnonymous(t *testing.T) {
	chromium := requireChromium(t)
	needTool(t, "mosquitto_pub")
	dir := t.TempDir()
	aclfile := filepath.Join(dir, "acl")
	writeFile(t, aclfile, "topic read async-mqtt/#\n\nuser tools\ntopic readwrite #\n")
	pwfile := filepath.Join(dir, "passwd")
	writeFile(t, pwfile, "tools:"+hashPassword(t, "tools-secret")+"\n")
	c := startCaddyWith(t, dashboardCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: fmt.Sprintf(
		"password_file %s\n\t\tacl_file %s", pwfile, aclfile)})
	tcp := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(c.Ports.TCP), "-u", "tools", "-P", "tools-secret"}
	if out, err := exec.Command("mosquitto_pub", append([]string{"-t", "async-mqtt/ESP8266/led/state", "-m", "on", "-q", "1", "-r"}, tcp...)...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}

	b := startBrowser(t, chromium, trustStore(t, c))
	b.do("open", map[string]any{"name": "anon", "url": fmt.Sprintf("https://localhost:%d/", c.Ports.HTTPS)}, nil)
	b.do("click", map[string]any{"name": "anon", "selector": "#anonymous-button"}, nil)
	b.do("waitVisible", map[string]any{"name": "anon", "selector": "#main", "timeout": 20000}, nil)
	b.waitText("anon", "#whoami", "anonymous", 5*time.Second)
	b.waitText("anon", "#sub-result", "Not allowed to read # (0x87 Not authorized). Following async-mqtt/#.", 10*time.Second)
	b.do("waitChecked", map[string]any{"name": "anon", "selector": "#led", "value": true, "timeout": 10000}, nil)
	b.do("click", map[string]any{"name": "anon", "selector": "#led"}, nil)
	b.waitText("anon", "#led-note", "Refused by the broker: 0x87 Not authorized", 10*time.Second)
	var checked bool
	b.do("eval", map[string]any{"name": "anon", "expr": "document.getElementById('led').checked"}, &checked)
	if !checked {
		t.Error("the switch moved although the broker refused the command")
	}

}
