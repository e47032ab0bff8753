// Command mqttbench is a load generator for MQTT brokers: throughput,
// latency, fan-out, fan-in, idle memory per connection and connection rate,
// over tcp://, ssl://, ws:// and wss://. It speaks MQTT 3.1.1 with its own
// small codec, so that its own cost per message stays well below a broker's;
// it reports that cost (getrusage of its own process) beside the broker's
// (/proc/<pid>/stat of --pid). It is meant for loopback measurements.
//
//	mqttbench --url tcp://127.0.0.1:1883 --scenario throughput --pubs 4 --subs 4 --qos 0 --size 64
//	mqttbench --url ssl://127.0.0.1:8883 --servername localhost --cafile root.crt --scenario connect
//	mqttbench --url ws://127.0.0.1:8080/mqtt --scenario latency --rate 5000
//	mqttbench --url tcp://127.0.0.1:1883 --scenario idle --conns 10000 --pid 1234
//
// See docs/PERFORMANCE.md and cmd/mqttbench/compare.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one scenario's outcome; --json prints it as one object.
type Result struct {
	Scenario string `json:"scenario"`
	URL      string `json:"url"`
	QoS      int    `json:"qos"`
	Size     int    `json:"size"`
	Pubs     int    `json:"pubs"`
	Subs     int    `json:"subs"`

	Sent      int64   `json:"sent"`
	Expected  int64   `json:"expected"`
	Delivered int64   `json:"delivered"`
	Lost      int64   `json:"lost"`
	Seconds   float64 `json:"seconds"`
	MsgPerSec float64 `json:"msg_per_sec,omitempty"` // delivered messages per second

	P50us  float64 `json:"p50_us,omitempty"`
	P99us  float64 `json:"p99_us,omitempty"`
	P999us float64 `json:"p999_us,omitempty"`
	MaxUs  float64 `json:"max_us,omitempty"`

	Conns          int     `json:"conns,omitempty"`
	RSSBeforeKB    int64   `json:"rss_before_kb,omitempty"`
	RSSAfterKB     int64   `json:"rss_after_kb,omitempty"`
	KBPerConn      float64 `json:"kb_per_conn,omitempty"`
	ConnsPerSec    float64 `json:"conns_per_sec,omitempty"`
	GenCPUusPerMsg float64 `json:"gen_cpu_us_per_msg,omitempty"`
	BrkCPUusPerMsg float64 `json:"broker_cpu_us_per_msg,omitempty"`
	GenCPUPct      float64 `json:"gen_cpu_pct,omitempty"` // of one core
	BrkCPUPct      float64 `json:"broker_cpu_pct,omitempty"`

	Errors int64  `json:"errors"`
	Error  string `json:"error,omitempty"`
	OK     bool   `json:"ok"` // everything sent was delivered, no errors
}

type options struct {
	url, cafile, serverName string
	insecure                bool
	scenario                string
	pubs, subs, qos, size   int
	duration, connTO, drain time.Duration
	count                   int
	rate                    float64
	window, inflight, batch int
	conns, conc             int
	active                  bool
	settle, hold            time.Duration
	pid                     int
	json                    bool
}

func main() {
	var o options
	fs := flag.NewFlagSet("mqttbench", flag.ExitOnError)
	fs.StringVar(&o.url, "url", "tcp://127.0.0.1:1883", "broker: tcp://, ssl://, ws:// or wss://host:port[/path]")
	fs.StringVar(&o.cafile, "cafile", "", "PEM CA certificate(s) to verify the broker with (ssl://, wss://)")
	fs.StringVar(&o.serverName, "servername", "", "TLS server name (SNI and verification) and WebSocket Host, default the URL's host")
	fs.BoolVar(&o.insecure, "insecure-skip-verify", false, "do not verify the broker's certificate")
	fs.StringVar(&o.scenario, "scenario", "throughput", "throughput, latency, fanout, fanin, idle or connect")
	fs.IntVar(&o.pubs, "pubs", 0, "publishers (default: 4; latency 1; fanout 1; fanin 1000)")
	fs.IntVar(&o.subs, "subs", 0, "subscribers, all on the same topic (default: 4; latency 1; fanout 1000; fanin 1)")
	fs.IntVar(&o.qos, "qos", 0, "QoS of publishes and subscriptions (0, 1, 2)")
	fs.IntVar(&o.size, "size", 64, "payload bytes (at least 16 carry a timestamp)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "publishing time at most")
	fs.IntVar(&o.count, "count", 10_000_000, "messages per publisher at most")
	fs.Float64Var(&o.rate, "rate", 0, "total publish rate, msg/s (latency default 5000; 0 = as fast as the window allows)")
	fs.IntVar(&o.window, "window", 500, "messages published and not yet received by the slowest subscriber (and at most 100000 deliveries)")
	fs.IntVar(&o.inflight, "inflight", 20, "unacknowledged QoS 1/2 publishes per publisher")
	fs.IntVar(&o.batch, "batch", 16, "messages per write (throughput runs)")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "time to wait for deliveries after publishing")
	fs.DurationVar(&o.connTO, "connect-timeout", 10*time.Second, "time for one connection, CONNECT to CONNACK")
	fs.IntVar(&o.conns, "conns", 1000, "connections (idle, connect)")
	fs.IntVar(&o.conc, "concurrency", 16, "connections opened at once (idle, connect)")
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "idle: time for the broker's RSS to settle at most")
	fs.BoolVar(&o.active, "active", false, "idle: each connection first subscribes, publishes one QoS 1 message to itself and acknowledges it, as a device does")
	fs.DurationVar(&o.hold, "hold", 0, "idle: keep the connections open this long after measuring (to profile the broker)")
	fs.IntVar(&o.pid, "pid", 0, "broker process: its CPU (and RSS for idle) is reported")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write the generator's own CPU profile to this file")
	fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mqttbench:", err)
			os.Exit(2)
		}
		defer f.Close()
	}
	res, err := run(ctx, o)
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(2)
	}
	if o.json {
		json.NewEncoder(os.Stdout).Encode(res)
	} else {
		printTable(os.Stdout, []Result{*res})
	}
	if !res.OK {
		os.Exit(1)
	}
}

func newRunID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// run runs one scenario. Every scenario is bounded in count and time.
func run(ctx context.Context, o options) (*Result, error) {
	brokerPID = o.pid
	t, err := parseTarget(o.url, o.cafile, o.serverName, o.insecure)
	if err != nil {
		return nil, err
	}
	if o.qos < 0 || o.qos > 2 || o.size < 0 || o.size > 1<<20 {
		return nil, fmt.Errorf("qos must be 0..2 and size 0..1MiB")
	}
	res := &Result{Scenario: o.scenario, URL: o.url, QoS: o.qos, Size: o.size}
	runID := newRunID()
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	switch o.scenario {
	case "throughput", "latency", "fanout", "fanin":
		switch o.scenario {
		case "throughput":
			def(&o.pubs, 4)
			def(&o.subs, 4)
		case "latency":
			def(&o.pubs, 1)
			def(&o.subs, 1)
			if o.rate <= 0 {
				o.rate = 5000
			}
		case "fanout":
			def(&o.pubs, 1)
			def(&o.subs, 1000)
		case "fanin":
			def(&o.pubs, 1000)
			def(&o.subs, 1)
		}
		if o.pubs+o.subs > 19000 {
			return nil, fmt.Errorf("at most 19000 connections")
		}
		raiseNoFile()
		res.Pubs, res.Subs = o.pubs, o.subs
		cfg := loadConfig{pubs: o.pubs, subs: o.subs, qos: byte(o.qos), size: o.size,
			duration: o.duration, count: o.count, rate: o.rate, window: o.window,
			inflight: o.inflight, batch: max(1, o.batch), drain: o.drain, connTO: o.connTO,
			latency: o.scenario == "latency"}
		lr, err := runLoad(ctx, t, cfg, runID)
		if err != nil {
			return nil, err
		}
		res.Sent, res.Expected, res.Delivered = lr.sent, lr.expected, lr.delivered
		res.Lost = max(0, lr.expected-lr.delivered)
		res.Seconds = lr.elapsed.Seconds()
		if res.Seconds > 0 {
			res.MsgPerSec = float64(lr.delivered) / res.Seconds
		}
		res.Errors = lr.errs
		if lr.err != nil {
			res.Error = lr.err.Error()
		}
		if cfg.latency && len(lr.lat) > 0 {
			res.P50us = percentile(lr.lat, 0.50)
			res.P99us = percentile(lr.lat, 0.99)
			res.P999us = percentile(lr.lat, 0.999)
			res.MaxUs = float64(lr.lat[len(lr.lat)-1]) / 1e3
		}
		cpuFigures(res, lr.cpu0, lr.cpu1, lr.delivered+lr.sent, lr.elapsed)
		res.OK = res.Lost == 0 && res.Delivered == res.Expected && res.Errors == 0 && res.Sent > 0
	case "idle":
		raiseNoFile()
		if o.conns > 19000 {
			return nil, fmt.Errorf("at most 19000 connections")
		}
		ir := runIdle(ctx, t, o.conns, o.conc, o.active, o.connTO, o.settle, o.hold, runID)
		res.Conns = ir.opened
		res.RSSBeforeKB, res.RSSAfterKB = ir.rssBefore, ir.rssAfter
		if ir.opened > 0 {
			res.KBPerConn = float64(ir.rssAfter-ir.rssBefore) * 1.024 / float64(ir.opened) // kB (1000 B)
		}
		if ir.err != nil {
			res.Error = ir.err.Error()
			res.Errors = 1
		}
		res.Expected, res.Delivered = int64(o.conns), int64(ir.opened)
		res.OK = ir.err == nil && ir.opened == o.conns
	case "connect":
		raiseNoFile()
		c0 := sampleCPU()
		cr := runConnect(ctx, t, o.conns, o.conc, o.connTO, o.duration+o.connTO, runID)
		c1 := sampleCPU()
		res.Conns = cr.done
		res.Seconds = cr.elapsed.Seconds()
		if res.Seconds > 0 {
			res.ConnsPerSec = float64(cr.done) / res.Seconds
		}
		cpuFigures(res, c0, c1, int64(cr.done), cr.elapsed)
		res.Errors = cr.errs
		if cr.err != nil {
			res.Error = cr.err.Error()
		}
		res.Expected, res.Delivered = int64(o.conns), int64(cr.done)
		res.OK = cr.errs == 0 && cr.done > 0
	default:
		return nil, fmt.Errorf("unknown scenario %q", o.scenario)
	}
	return res, nil
}

// cpuFigures sets CPU per unit (message or connection) and CPU load.
// For load runs the generator's unit is every message it handled (sent or
// received), the broker's every delivered message.
func cpuFigures(res *Result, c0, c1 cpuSample, genUnits int64, elapsed time.Duration) {
	if elapsed <= 0 {
		return
	}
	if genUnits > 0 {
		res.GenCPUusPerMsg = float64(c1.self-c0.self) / 1e3 / float64(genUnits)
	}
	res.GenCPUPct = 100 * float64(c1.self-c0.self) / float64(elapsed)
	if c0.brokerOK && c1.brokerOK {
		units := res.Delivered
		if res.Scenario == "connect" {
			units = int64(res.Conns)
		}
		if units > 0 {
			res.BrkCPUusPerMsg = float64(c1.broker-c0.broker) / 1e3 / float64(units)
		}
		res.BrkCPUPct = 100 * float64(c1.broker-c0.broker) / float64(elapsed)
	}
}

// printTable prints results for people.
func printTable(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\turl\tqos\tsize\tpubs×subs\tsent\tdelivered\tlost\tmsg/s\tp50 µs\tp99 µs\tp999 µs\tconns\tKB/conn\tconn/s\tgen µs/msg\tbroker µs/msg\tok\t")
	for _, r := range rs {
		f := func(v float64, prec int) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.*f", prec, v)
		}
		ok := "yes"
		if !r.OK {
			ok = "NO"
			if r.Lost > 0 {
				ok = fmt.Sprintf("LOST %d", r.Lost)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d×%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Scenario, r.URL, r.QoS, r.Size, r.Pubs, r.Subs, r.Sent, r.Delivered, r.Lost,
			f(r.MsgPerSec, 0), f(r.P50us, 0), f(r.P99us, 0), f(r.P999us, 0), r.Conns,
			f(r.KBPerConn, 1), f(r.ConnsPerSec, 0), f(r.GenCPUusPerMsg, 2), f(r.BrkCPUusPerMsg, 2), ok)
	}
	tw.Flush()
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(w, "%s %s: %s\n", r.Scenario, r.URL, strings.TrimSpace(r.Error))
		}
	}
}
