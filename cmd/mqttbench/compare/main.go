// Command compare runs caddy-mqtt (its four doors, the built ./cmd/caddy),
// standalone mochi v2 (cmd/mqttbench/mochiserver) and Debian's mosquitto
// side by side on loopback, interleaved, and prints medians and ratios.
// It writes results.json, results.md and chart.svg to --out.
//
//	go run ./cmd/mqttbench/compare --mode quick   # about 5 minutes
//	go run ./cmd/mqttbench/compare --mode full    # about 20 minutes
//
// Run it from the repository root. See docs/PERFORMANCE.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// benchCase is one row of the comparison: one scenario through one kind of
// door, run against every broker that has that door.
type benchCase struct {
	Name   string   `json:"name"`
	Door   string   `json:"door"` // tcp, ssl, ws, wss
	Args   []string `json:"args"`
	Metric string   `json:"metric"`         // msg_per_sec, p99_us, kb_per_conn, conns_per_sec
	Fresh  bool     `json:"-"`              // restart the brokers first (idle memory)
	Once   bool     `json:"once,omitempty"` // in the first repetition only (long runs)
}

func (c benchCase) higherBetter() bool {
	return c.Metric == "msg_per_sec" || c.Metric == "conns_per_sec"
}

func cases(mode string) []benchCase {
	d := "--duration=1s"
	idle := []int{2000}
	connN := "2000"
	if mode == "full" {
		d = "--duration=2s"
		idle = []int{10000, 19000}
		connN = "5000"
	}
	tp := func(name, door string, qos, size int, extra ...string) benchCase {
		return benchCase{Name: name, Door: door, Metric: "msg_per_sec",
			Args: append([]string{"--scenario=throughput", d, fmt.Sprintf("--qos=%d", qos), fmt.Sprintf("--size=%d", size)}, extra...)}
	}
	lat := func(name, door string, qos, size int) benchCase {
		return benchCase{Name: name, Door: door, Metric: "p99_us",
			Args: []string{"--scenario=latency", "--rate=5000", "--duration=3s", fmt.Sprintf("--qos=%d", qos), fmt.Sprintf("--size=%d", size)}}
	}
	idleCase := func(door string, n int) benchCase {
		return benchCase{Name: fmt.Sprintf("idle %s connection (%dk)", strings.ToUpper(door), n/1000), Door: door, Metric: "kb_per_conn", Fresh: true,
			Once: n > 10000,
			Args: []string{"--scenario=idle", fmt.Sprintf("--conns=%d", n), "--concurrency=32"}}
	}
	// A device subscribes and publishes before it idles; a broker may keep
	// more for it than for a connection that only sent CONNECT.
	activeCase := func(door string, n int) benchCase {
		c := idleCase(door, n)
		c.Name = fmt.Sprintf("idle %s connection after a subscribe and a publish (%dk)", strings.ToUpper(door), n/1000)
		c.Args = append(c.Args, "--active")
		return c
	}
	conn := func(name, door, n string) benchCase {
		return benchCase{Name: name, Door: door, Metric: "conns_per_sec",
			Args: []string{"--scenario=connect", "--conns=" + n, "--concurrency=8", "--duration=20s"}}
	}
	var cs []benchCase
	cs = append(cs,
		tp("TCP QoS 0, 64 B", "tcp", 0, 64),
		tp("TCP QoS 1, 64 B", "tcp", 1, 64),
		tp("TCP QoS 0, 4 KiB", "tcp", 0, 4096),
		tp("WS QoS 0, 64 B", "ws", 0, 64),
		tp("WS QoS 0, 4 KiB", "ws", 0, 4096),
		tp("TLS QoS 0, 4 KiB", "ssl", 0, 4096),
		lat("p99 µs at 5k msg/s, TCP QoS 0, 64 B", "tcp", 0, 64),
		lat("p99 µs at 5k msg/s, TCP QoS 1, 4 KiB", "tcp", 1, 4096),
		tp("fan-out 1→1000, TCP QoS 0, 64 B", "tcp", 0, 64, "--pubs=1", "--subs=1000"),
	)
	if mode == "full" {
		cs = append(cs,
			tp("TCP QoS 2, 64 B", "tcp", 2, 64),
			tp("TCP QoS 1, 4 KiB", "tcp", 1, 4096),
			tp("TCP QoS 0, 64 KiB", "tcp", 0, 65536),
			tp("TLS QoS 0, 64 B", "ssl", 0, 64),
			tp("WSS QoS 0, 64 B", "wss", 0, 64),
			tp("WSS QoS 0, 4 KiB", "wss", 0, 4096),
			lat("p99 µs at 5k msg/s, WS QoS 0, 64 B", "ws", 0, 64),
			lat("p99 µs at 5k msg/s, TCP QoS 0, 4 KiB", "tcp", 0, 4096),
			lat("p99 µs at 5k msg/s, WS QoS 1, 4 KiB", "ws", 1, 4096),
			tp("fan-in 1000→1, TCP QoS 0, 64 B", "tcp", 0, 64, "--pubs=1000", "--subs=1"),
			conn("new TLS connections/s (full handshake)", "ssl", "2000"),
		)
	}
	cs = append(cs, conn("new TCP connections/s", "tcp", connN))
	for _, n := range idle {
		doors := []string{"tcp"}
		if mode == "full" {
			doors = []string{"tcp", "ws", "ssl", "wss"}
		}
		for _, door := range doors {
			cs = append(cs, idleCase(door, n))
		}
	}
	cs = append(cs, activeCase("tcp", idle[0]))
	return cs
}

// broker is one broker process and the URLs of its doors.
type broker struct {
	Name  string            `json:"name"`
	Doors map[string]string `json:"doors"`
	cmd   *exec.Cmd
	start func() (*exec.Cmd, error)
	wait  []int // ports to wait for
	log   *os.File
}

func (b *broker) Start() error {
	cmd, err := b.start()
	if err != nil {
		return err
	}
	b.cmd = cmd
	for _, p := range b.wait {
		if err := waitPort(p, 30*time.Second); err != nil {
			b.Stop()
			return fmt.Errorf("%s: %w", b.Name, err)
		}
	}
	return nil
}

func (b *broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	b.cmd = nil
}

func (b *broker) PID() int { return b.cmd.Process.Pid }

func waitPort(port int, d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("port %d not listening after %v", port, d)
}

// freePorts returns n ports free now, below the range the kernel picks
// the local ports of outgoing connections from: each broker is restarted
// on the same ports for every case, and a port in that range can meanwhile
// be the local end of one of mqttbench's own connections (mosquitto's
// WebSocket listener once failed to start so).
func freePorts(n int) []int {
	lo, hi := 10000, ephemeralPortsFrom()-1
	var ps []int
	for tries := 0; len(ps) < n && tries < 10000; tries++ {
		p := lo + rand.IntN(hi-lo+1)
		if slices.Contains(ps, p) {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		ps = append(ps, p)
	}
	if len(ps) < n {
		log.Fatalf("no %d free ports between %d and %d", n, lo, hi)
	}
	return ps
}

// ephemeralPortsFrom is the first port the kernel gives outgoing
// connections (Linux's ip_local_port_range; 32768 elsewhere).
func ephemeralPortsFrom() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 10100 {
		return 32768
	}
	return lo
}

const caddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	http_port {{.HTTP}}
	https_port {{.HTTPS}}
	default_bind 127.0.0.1
	local_certs
	skip_install_trust
	log {
		level ERROR
	}
	mqtt {
		allow_anonymous
		max_packet_size 1MiB
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
}

http://localhost:{{.HTTP}} {
	mqtt /mqtt
}
`

// mosquitto.conf: the listeners and anonymous access, persistence off,
// everything else (max_queued_messages, max_inflight_messages...) at
// mosquitto's defaults. TLS uses Caddy's own certificate and key.
const mosquittoConf = `per_listener_settings false
allow_anonymous true
persistence false
user root
log_dest stderr
log_type error
listener {{.TCP}} 127.0.0.1
listener {{.WS}} 127.0.0.1
protocol websockets
listener {{.TLS}} 127.0.0.1
certfile {{.Cert}}
keyfile {{.Key}}
listener {{.WSS}} 127.0.0.1
protocol websockets
certfile {{.Cert}}
keyfile {{.Key}}
`

func render(tmpl string, data any) []byte {
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, data); err != nil {
		log.Fatal(err)
	}
	return b.Bytes()
}

// run is one mqttbench run.
type run struct {
	Case   string          `json:"case"`
	Door   string          `json:"door"`
	Broker string          `json:"broker"`
	Rep    int             `json:"rep"`
	Result json.RawMessage `json:"result"`
	res    map[string]any
}

func (r run) num(k string) float64 {
	v, _ := r.res[k].(float64)
	return v
}

func (r run) ok() bool {
	v, _ := r.res["ok"].(bool)
	return v
}

func main() {
	mode := flag.String("mode", "quick", "quick (about 5 minutes) or full (about 20 minutes)")
	reps := flag.Int("reps", 3, "repetitions; medians are reported")
	out := flag.String("out", "mqttbench-results", "directory for results.json, results.md, chart.svg and logs")
	only := flag.String("only", "", "run only the cases whose name matches this regular expression")
	profile := flag.Bool("profile", false, "also save CPU profiles of caddy-mqtt during its load runs, and a heap profile during its idle runs")
	report := flag.String("report", "", "only rebuild results.md and chart.svg in --out from this results.json")
	flag.Parse()
	if *report != "" {
		if err := rebuild(*report, *out); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *mode != "quick" && *mode != "full" {
		log.Fatal("--mode is quick or full")
	}
	started := time.Now()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	// Brokers and the generator inherit the raised limit of open files.
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	tmp, err := os.MkdirTemp("", "mqttbench-compare")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	bin := func(name string) string { return filepath.Join(tmp, name) }
	for name, pkg := range map[string]string{"caddy": "./cmd/caddy", "mochiserver": "./cmd/mqttbench/mochiserver", "mqttbench": "./cmd/mqttbench"} {
		log.Printf("building %s", pkg)
		cmd := exec.Command("go", "build", "-o", bin(name), pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			log.Fatalf("go build %s: %v (run compare from the repository root)", pkg, err)
		}
	}
	logFile := func(name string) *os.File {
		f, err := os.Create(filepath.Join(*out, name+".log"))
		if err != nil {
			log.Fatal(err)
		}
		return f
	}

	// caddy-mqtt
	p := freePorts(9)
	cp := struct{ Admin, HTTP, HTTPS, TCP, TLS int }{p[0], p[1], p[2], p[3], p[4]}
	cdir := filepath.Join(tmp, "caddyhome")
	os.MkdirAll(cdir, 0o755)
	os.WriteFile(filepath.Join(cdir, "Caddyfile"), render(caddyfile, cp), 0o644)
	data := filepath.Join(cdir, "data")
	cert := filepath.Join(data, "caddy", "certificates", "local", "localhost", "localhost.crt")
	key := strings.TrimSuffix(cert, ".crt") + ".key"
	root := filepath.Join(data, "caddy", "pki", "authorities", "local", "root.crt")
	clog := logFile("caddy")
	caddy := &broker{Name: "caddy-mqtt", log: clog, wait: []int{cp.TCP, cp.TLS, cp.HTTP, cp.HTTPS},
		Doors: map[string]string{
			"tcp": fmt.Sprintf("tcp://127.0.0.1:%d", cp.TCP),
			"ssl": fmt.Sprintf("ssl://127.0.0.1:%d", cp.TLS),
			"ws":  fmt.Sprintf("ws://127.0.0.1:%d/mqtt", cp.HTTP),
			"wss": fmt.Sprintf("wss://127.0.0.1:%d/mqtt", cp.HTTPS),
		},
		start: func() (*exec.Cmd, error) {
			cmd := exec.Command(bin("caddy"), "run", "--config", filepath.Join(cdir, "Caddyfile"), "--adapter", "caddyfile")
			cmd.Dir = cdir
			cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+data, "XDG_CONFIG_HOME="+filepath.Join(cdir, "config"), "HOME="+cdir)
			cmd.Stdout, cmd.Stderr = clog, clog
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			// The TLS doors are ready once the internal CA has issued.
			end := time.Now().Add(60 * time.Second)
			for time.Now().Before(end) {
				if _, err := os.Stat(key); err == nil {
					return cmd, nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return cmd, fmt.Errorf("caddy issued no certificate (see %s)", clog.Name())
		}}
	// mochi alone
	mlog := logFile("mochi")
	mochi := &broker{Name: "mochi", log: mlog, wait: []int{p[5], p[6]},
		Doors: map[string]string{
			"tcp": fmt.Sprintf("tcp://127.0.0.1:%d", p[5]),
			"ws":  fmt.Sprintf("ws://127.0.0.1:%d/mqtt", p[6]),
		},
		start: func() (*exec.Cmd, error) {
			cmd := exec.Command(bin("mochiserver"), "--tcp", fmt.Sprintf("127.0.0.1:%d", p[5]), "--ws", fmt.Sprintf("127.0.0.1:%d", p[6]))
			cmd.Stdout, cmd.Stderr = mlog, mlog
			return cmd, cmd.Start()
		}}
	// mosquitto, with Caddy's certificate
	mp := freePorts(4)
	mq := struct {
		TCP, WS, TLS, WSS int
		Cert, Key         string
	}{mp[0], mp[1], mp[2], mp[3], cert, key}
	mconf := filepath.Join(tmp, "mosquitto.conf")
	os.WriteFile(mconf, render(mosquittoConf, mq), 0o644)
	qlog := logFile("mosquitto")
	mosq := &broker{Name: "mosquitto", log: qlog, wait: []int{mq.TCP, mq.WS, mq.TLS, mq.WSS},
		Doors: map[string]string{
			"tcp": fmt.Sprintf("tcp://127.0.0.1:%d", mq.TCP),
			"ssl": fmt.Sprintf("ssl://127.0.0.1:%d", mq.TLS),
			"ws":  fmt.Sprintf("ws://127.0.0.1:%d/mqtt", mq.WS),
			"wss": fmt.Sprintf("wss://127.0.0.1:%d/mqtt", mq.WSS),
		},
		start: func() (*exec.Cmd, error) {
			cmd := exec.Command("mosquitto", "-c", mconf)
			cmd.Stdout, cmd.Stderr = qlog, qlog
			return cmd, cmd.Start()
		}}
	brokers := []*broker{caddy, mochi, mosq}
	stopAll := func() {
		for _, b := range brokers {
			b.Stop()
		}
	}
	defer stopAll()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; cancel(); stopAll(); os.Exit(130) }()
	for _, b := range brokers { // caddy first: mosquitto needs its certificate
		if err := b.Start(); err != nil {
			log.Fatal(err)
		}
	}

	cs := cases(*mode)
	if *only != "" {
		re := regexp.MustCompile(*only)
		cs = slices.DeleteFunc(cs, func(c benchCase) bool { return !re.MatchString(c.Name) })
	}
	var runs []run
	save := func() {
		b, _ := json.MarshalIndent(map[string]any{"mode": *mode, "reps": *reps, "cases": cs, "runs": runs,
			"started": started.UTC().Format(time.RFC3339)}, "", " ")
		os.WriteFile(filepath.Join(*out, "results.json"), b, 0o644)
	}
	for rep := 1; rep <= *reps; rep++ {
		for ci, c := range cs {
			if c.Once && rep > 1 {
				continue
			}
			order := slices.Clone(brokers)
			// Interleave: each repetition and case starts with another broker.
			k := (rep + ci) % len(order)
			order = append(order[k:], order[:k]...)
			for _, b := range order {
				url, ok := b.Doors[c.Door]
				if !ok {
					continue
				}
				if c.Fresh {
					b.Stop()
					if err := b.Start(); err != nil {
						log.Fatal(err)
					}
					time.Sleep(time.Second)
				}
				args := append([]string{"--json", "--url=" + url, fmt.Sprintf("--pid=%d", b.PID())}, c.Args...)
				if c.Door == "ssl" || c.Door == "wss" {
					args = append(args, "--cafile="+root, "--servername=localhost")
				}
				if b == caddy && (c.Door == "ws" || c.Door == "wss") {
					args = append(args, "--servername=localhost")
				}
				var prof chan struct{}
				if *profile && b == caddy && rep == 1 {
					prof = profileCaddy(cp.Admin, c, *out, &args)
				}
				r := runBench(ctx, bin("mqttbench"), args)
				if prof != nil {
					<-prof
				}
				r.Case, r.Door, r.Broker, r.Rep = c.Name, c.Door, b.Name, rep
				runs = append(runs, r)
				save()
				status := "ok"
				if !r.ok() {
					status = fmt.Sprintf("NOT OK: lost %v errors %v %v", r.res["lost"], r.res["errors"], r.res["error"])
				}
				log.Printf("rep %d %-40s %-10s %s=%.1f %s", rep, c.Name, b.Name, c.Metric, r.num(c.Metric), status)
			}
		}
	}
	md := summary(cs, runs, *reps)
	os.WriteFile(filepath.Join(*out, "results.md"), []byte(md), 0o644)
	os.WriteFile(filepath.Join(*out, "chart.svg"), []byte(chart(cs, runs)), 0o644)
	fmt.Print(md)
	log.Printf("done in %v; results in %s", time.Since(started).Round(time.Second), *out)
}

// rebuild writes results.md and chart.svg from a saved results.json.
func rebuild(path, out string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var saved struct {
		Reps  int         `json:"reps"`
		Cases []benchCase `json:"cases"`
		Runs  []run       `json:"runs"`
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return err
	}
	for i := range saved.Runs {
		if err := json.Unmarshal(saved.Runs[i].Result, &saved.Runs[i].res); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	md := summary(saved.Cases, saved.Runs, saved.Reps)
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "chart.svg"), []byte(chart(saved.Cases, saved.Runs)), 0o644)
}

// runBench runs mqttbench and parses its JSON line.
func runBench(ctx context.Context, bin string, args []string) run {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	var r run
	if err := json.Unmarshal(stdout.Bytes(), &r.res); err != nil {
		r.res = map[string]any{"ok": false, "error": strings.TrimSpace(stderr.String())}
	}
	r.Result, _ = json.Marshal(r.res)
	return r
}

// profileCaddy fetches a CPU profile over a load run, or a heap profile in
// the middle of an idle run (which is then held open for it).
func profileCaddy(admin int, c benchCase, out string, args *[]string) chan struct{} {
	done := make(chan struct{})
	name := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(c.Name, "_")
	var url, file string
	var delay time.Duration
	if c.Metric == "kb_per_conn" {
		*args = append(*args, "--hold=15s")
		url = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", admin)
		file = filepath.Join(out, "caddy-"+name+".heap.pprof")
		delay = 12 * time.Second // connections open and settled, still held
	} else {
		url = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=2", admin)
		file = filepath.Join(out, "caddy-"+name+".cpu.pprof")
		delay = 700 * time.Millisecond // connections set up, publishing
	}
	go func() {
		defer close(done)
		time.Sleep(delay)
		resp, err := http.Get(url)
		if err != nil {
			log.Printf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(file)
		if err != nil {
			return
		}
		io.Copy(f, resp.Body)
		f.Close()
	}()
	return done
}
