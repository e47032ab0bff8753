package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

var order = []string{"mosquitto", "mochi", "caddy-mqtt"}

// cell is one broker's medians for one case.
type cell struct {
	n                 int
	metric, cpu, gen  float64
	notOK, lost, errs int
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

func cells(c benchCase, runs []run) map[string]cell {
	m := map[string]cell{}
	for _, b := range order {
		var ms, cpu, gen []float64
		var cl cell
		for _, r := range runs {
			if r.Case != c.Name || r.Broker != b {
				continue
			}
			ms = append(ms, r.num(c.Metric))
			cpu = append(cpu, r.num("broker_cpu_us_per_msg"))
			gen = append(gen, r.num("gen_cpu_us_per_msg"))
			if !r.ok() {
				cl.notOK++
			}
			cl.lost += int(r.num("lost"))
			cl.errs += int(r.num("errors"))
		}
		if len(ms) == 0 {
			continue
		}
		cl.n, cl.metric, cl.cpu, cl.gen = len(ms), median(ms), median(cpu), median(gen)
		m[b] = cl
	}
	return m
}

func si(v float64) string {
	switch {
	case v >= 10e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func format(c benchCase, cl cell) string {
	var s string
	switch c.Metric {
	case "msg_per_sec":
		s = si(cl.metric)
		if cl.cpu > 0 {
			s += fmt.Sprintf(", %.1f µs", cl.cpu)
		}
	case "p99_us":
		s = fmt.Sprintf("%.0f µs", cl.metric)
	case "kb_per_conn":
		s = fmt.Sprintf("%.1f KB", cl.metric)
	case "conns_per_sec":
		s = si(cl.metric) + "/s"
	}
	if cl.lost > 0 {
		s += fmt.Sprintf(" (**lost %d**)", cl.lost)
	} else if cl.notOK > 0 {
		s += fmt.Sprintf(" (**%d of %d runs failed**)", cl.notOK, cl.n)
	}
	return s
}

// ratio is caddy-mqtt's median over another broker's, as measured (for
// latency and memory, lower is better).
func ratio(cs map[string]cell, other string) (float64, bool) {
	a, ok1 := cs["caddy-mqtt"]
	b, ok2 := cs[other]
	if !ok1 || !ok2 || b.metric == 0 || a.notOK > 0 || b.notOK > 0 {
		return 0, false
	}
	return a.metric / b.metric, true
}

func summary(cs []benchCase, runs []run, reps int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Medians of %d interleaved repetitions. Throughput: delivered msg/s, broker CPU µs per delivered message. Ratios are caddy-mqtt / other (for p99 and KB, lower is better).\n\n", reps)
	b.WriteString("| scenario | mosquitto | mochi alone | caddy-mqtt | caddy/mosquitto | caddy/mochi | mqttbench µs/msg |\n|---|---|---|---|---|---|---|\n")
	for _, c := range cs {
		m := cells(c, runs)
		row := []string{c.Name}
		if c.Once {
			row[0] += " (one run)"
		}
		for _, br := range order {
			if cl, ok := m[br]; ok {
				row = append(row, format(c, cl))
			} else {
				row = append(row, "—")
			}
		}
		for _, o := range []string{"mosquitto", "mochi"} {
			if r, ok := ratio(m, o); ok {
				row = append(row, fmt.Sprintf("%.2f×", r))
			} else {
				row = append(row, "—")
			}
		}
		if cl, ok := m["caddy-mqtt"]; ok && cl.gen > 0 {
			row = append(row, fmt.Sprintf("%.2f", cl.gen))
		} else {
			row = append(row, "—")
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	return b.String()
}

// chart is a bar chart of caddy-mqtt's advantage over mosquitto and over
// mochi alone per case: the ratio, inverted where lower is better, so that
// a bar past 1 always means caddy-mqtt did better.
func chart(cs []benchCase, runs []run) string {
	const left, width, rowH, barH, top, maxV = 330.0, 520.0, 38.0, 14.0, 50.0, 4.0
	h := top + rowH*float64(len(cs)) + 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", left+width+80, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">caddy-mqtt advantage (×, &gt;1 = caddy-mqtt better; latency and memory inverted)</text>`+"\n")
	fmt.Fprintf(&b, `<rect x="%.0f" y="28" width="12" height="10" fill="#4e79a7"/><text x="%.0f" y="37">vs mosquitto</text>`, left, left+16)
	fmt.Fprintf(&b, `<rect x="%.0f" y="28" width="12" height="10" fill="#f28e2b"/><text x="%.0f" y="37">vs mochi alone</text>`+"\n", left+120, left+136)
	x := func(v float64) float64 { return left + width*math.Min(v, maxV)/maxV }
	for i := 0.0; i <= maxV; i++ {
		col := "#ddd"
		if i == 1 {
			col = "#333"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s"/><text x="%.1f" y="%.0f" text-anchor="middle">%.0f×</text>`+"\n",
			x(i), top-4, x(i), h-30, col, x(i), h-16, i)
	}
	for i, c := range cs {
		y := top + rowH*float64(i)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text>`+"\n", left-8, y+rowH/2+4, html.EscapeString(c.Name))
		m := cells(c, runs)
		for j, o := range []string{"mosquitto", "mochi"} {
			r, ok := ratio(m, o)
			by := y + 4 + float64(j)*(barH+2)
			if !ok {
				why := "no such door"
				if cl, ok := m[o]; ok && cl.notOK > 0 {
					why = o + " lost messages or failed"
				} else if cl, ok := m["caddy-mqtt"]; ok && cl.notOK > 0 {
					why = "caddy-mqtt lost messages or failed"
				}
				fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10" fill="#888">vs %s: — (%s)</text>`+"\n", left+4, by+barH-3, o, why)
				continue
			}
			adv := r
			if !c.higherBetter() && r > 0 {
				adv = 1 / r
			}
			colr := []string{"#4e79a7", "#f28e2b"}[j]
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.1f" height="%.0f" fill="%s"/><text x="%.1f" y="%.0f" font-size="10">%.2f</text>`+"\n",
				left, by, x(adv)-left, barH, colr, x(adv)+3, by+barH-3, adv)
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}
