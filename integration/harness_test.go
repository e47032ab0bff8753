// Package integration runs the real Caddy binary with caddy-mqtt plugged in
// and talks to it with real MQTT clients over real loopback sockets.
package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

// caddyBin is the Caddy binary under test: $CADDY_BIN (what ./xcaddy.sh
// built) or, without it, ./cmd/caddy built by TestMain.
var caddyBin string

func TestMain(m *testing.M) {
	code := func() int {
		caddyBin = os.Getenv("CADDY_BIN")
		if caddyBin == "" {
			dir, err := os.MkdirTemp("", "caddy-mqtt-bin")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			caddyBin = filepath.Join(dir, "caddy")
			cmd := exec.Command("go", "build", "-o", caddyBin, "../cmd/caddy")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "building caddy:", err)
				return 1
			}
		} else if abs, err := filepath.Abs(caddyBin); err == nil {
			caddyBin = abs
		}
		return m.Run()
	}()
	os.Exit(code)
}

// Ports are the free loopback ports one Caddy instance uses.
type Ports struct {
	Admin, HTTP, HTTPS, TCP, TLS int
}

func freePorts(t testing.TB) Ports {
	t.Helper()
	var ls []net.Listener
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		return l.Addr().(*net.TCPAddr).Port
	}
	p := Ports{Admin: port(), HTTP: port(), HTTPS: port(), TCP: port(), TLS: port()}
	for _, l := range ls {
		l.Close()
	}
	return p
}

// baseCaddyfile is the embedded default example on free ports, with a short
// CONNECT timeout so tests of silent sockets end quickly. {{.Extra}} lets a
// test add lines to the mqtt block and {{.Body}} to the sites.
const baseCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	http_port {{.HTTP}}
	https_port {{.HTTPS}}
	default_bind 127.0.0.1
	local_certs
	skip_install_trust
	mqtt {
		allow_anonymous
		connect_timeout 1s
		max_packet_size 64KiB
		{{.Extra}}
	}
	layer4 {
		127.0.0.1:{{.TCP}} {
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
		}
	}
}

https://localhost:{{.HTTPS}} {
	mqtt /mqtt
	respond "wss {{.Body}}"
}

http://localhost:{{.HTTP}} {
	mqtt /mqtt
	respond "ws {{.Body}}"
}
`

// derive returns base with each old string replaced by the new one after
// it. It panics when an old string is not in base, so that a change to the
// base config cannot silently leave a config derived from it unchanged.
func derive(base string, oldnew ...string) string {
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(base, oldnew[i]) {
			panic(fmt.Sprintf("derive: %q is not in the base config", oldnew[i]))
		}
	}
	return strings.NewReplacer(oldnew...).Replace(base)
}

// Caddy is one running Caddy process.
type Caddy struct {
	t        testing.TB
	Ports    Ports
	dir      string
	confPath string
	cmd      *exec.Cmd
	log      *syncBuffer
	done     chan struct{}
	err      error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CaddyConfig fills baseCaddyfile.
type CaddyConfig struct {
	Ports
	Extra string
	Body  string
}

func render(t testing.TB, tmpl string, cfg CaddyConfig) string {
	t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, cfg); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// startCaddy runs Caddy with the base config and waits until every door
// accepts connections. It is stopped when the test ends.
func startCaddy(t testing.TB, extra string) *Caddy {
	t.Helper()
	return startCaddyWith(t, baseCaddyfile, CaddyConfig{Ports: freePorts(t), Extra: extra})
}

// startCaddyWith runs Caddy with a Caddyfile template filled from cfg and
// waits until every door accepts connections and the internal CA's
// certificate for localhost is served.
func startCaddyWith(t testing.TB, tmpl string, cfg CaddyConfig) *Caddy {
	t.Helper()
	c := startCaddyConfig(t, render(t, tmpl, cfg), cfg.Ports, cfg.TCP, cfg.TLS, cfg.HTTP, cfg.HTTPS)
	c.waitCert()
	return c
}

// startCaddyConfig runs Caddy with a finished Caddyfile, in a data and
// config directory of its own, and waits until the given ports accept
// connections. It is killed when the test ends, if still running.
func startCaddyConfig(t testing.TB, conf string, ports Ports, wait ...int) *Caddy {
	t.Helper()
	c := &Caddy{t: t, Ports: ports, dir: t.TempDir(), log: new(syncBuffer)}
	c.confPath = c.writeConfig(conf)
	c.launch()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("caddy log:\n%s", tail(c.log.String(), 80))
		}
	})
	for _, port := range wait {
		c.waitPort(port)
	}
	return c
}

// env is the environment every caddy command of this instance runs with:
// its own data and config directories.
func (c *Caddy) env() []string {
	return append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(c.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(c.dir, "config"),
		"HOME="+c.dir)
}

// launch starts `caddy run` with the instance's config file.
func (c *Caddy) launch() {
	c.t.Helper()
	cmd := exec.Command(caddyBin, "run", "--config", c.confPath, "--adapter", "caddyfile")
	cmd.Dir, cmd.Env = c.dir, c.env()
	cmd.Stdout, cmd.Stderr = c.log, c.log
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	c.cmd, c.done, c.err = cmd, done, nil
	go func() { c.err = cmd.Wait(); close(done) }()
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func (c *Caddy) writeConfig(body string) string {
	path := filepath.Join(c.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return path
}

func (c *Caddy) waitPort(port int) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			c.t.Fatalf("caddy exited: %v\n%s", c.err, tail(c.log.String(), 40))
		default:
		}
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("port %d never opened\n%s", port, tail(c.log.String(), 40))
}

// waitCert waits until the internal CA's root exists and the HTTPS site
// serves a certificate it signed.
func (c *Caddy) waitCert() {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(c.RootPath()); err == nil {
			conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports.HTTPS),
				&tls.Config{RootCAs: c.RootPool(), ServerName: "localhost"})
			if err == nil {
				conn.Close()
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no certificate for localhost\n%s", tail(c.log.String(), 40))
}

// RootPath is the internal CA's root certificate, the file clients trust.
func (c *Caddy) RootPath() string {
	return filepath.Join(c.dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
}

// RootPool is a pool holding only the internal CA's root.
func (c *Caddy) RootPool() *x509.CertPool {
	c.t.Helper()
	pem, err := os.ReadFile(c.RootPath())
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		c.t.Fatal("bad root certificate")
	}
	return pool
}

// Reload replaces the config with `caddy reload`, like an operator would.
func (c *Caddy) Reload(cfg CaddyConfig) {
	c.t.Helper()
	cfg.Ports = c.Ports
	conf := c.writeConfig(render(c.t, baseCaddyfile, cfg))
	out, err := exec.Command(caddyBin, "reload", "--config", conf, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("127.0.0.1:%d", c.Ports.Admin)).CombinedOutput()
	if err != nil {
		c.t.Fatalf("caddy reload: %v\n%s", err, out)
	}
}

// Stop runs `caddy stop` and waits for the process to exit, returning how
// long that took.
func (c *Caddy) Stop() time.Duration {
	c.t.Helper()
	start := time.Now()
	out, err := exec.Command(caddyBin, "stop", "--address", fmt.Sprintf("127.0.0.1:%d", c.Ports.Admin)).CombinedOutput()
	if err != nil {
		c.t.Fatalf("caddy stop: %v\n%s", err, out)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.t.Fatal("caddy did not exit 30 s after caddy stop")
	}
	return time.Since(start)
}

// Goroutines returns how many goroutines the Caddy process runs whose
// stacks mention pattern, read from the admin endpoint's pprof.
func (c *Caddy) Goroutines(pattern string) int {
	c.t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=2", c.Ports.Admin))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		c.t.Fatal(err)
	}
	re := regexp.MustCompile(pattern)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if re.MatchString(g) {
			n++
		}
	}
	return n
}

// Log is everything Caddy printed so far.
func (c *Caddy) Log() string { return c.log.String() }

// Pid is the Caddy process's id.
func (c *Caddy) Pid() int { return c.cmd.Process.Pid }

// RSS is the Caddy process's resident memory in bytes, from
// /proc/<pid>/status (VmRSS).
func (c *Caddy) RSS() int64 {
	c.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				c.t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	c.t.Fatal("no VmRSS in /proc status")
	return 0
}
