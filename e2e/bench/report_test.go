//go:build benchmesh

package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// report is the benchmark's output: one table of medians over the rounds, then what it ran on.
type report struct {
	settings    settings
	machine     []string
	sidecarArgs []string
	loadBefore  string
	loadRounds  []string
	loadAfter   string
	paths       []*path
}

func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// per returns f of every round of p.
func per(p *path, f func(sample) float64) []float64 {
	out := make([]float64, len(p.rounds))
	for i, s := range p.rounds {
		out[i] = f(s)
	}
	return out
}

// ratio returns the median over rounds of f(p)/f(q) within each round: both ran in the same
// round, minutes apart at most, so the ratio carries less of the machine's drift than either.
func ratio(p, q *path, f func(sample) float64) float64 {
	if q == nil || p == q && len(p.pids) == 0 {
		return math.NaN()
	}
	var rs []float64
	for i := range min(len(p.rounds), len(q.rounds)) {
		if d := f(q.rounds[i]); d > 0 {
			rs = append(rs, f(p.rounds[i])/d)
		}
	}
	return median(rs)
}

func (r *report) path(name string) *path {
	for _, p := range r.paths {
		if p.name == name {
			return p
		}
	}
	return nil
}

func num(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	s := fmt.Sprintf("%.0f", x)
	// Thousands separators.
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func times(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

func ms(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.3f", x)
}

func mib(kib int64) string {
	if kib == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

func (r *report) markdown() string {
	var b strings.Builder
	s := r.settings
	direct, haproxy, stunnel := r.path("direct"), r.path("HAProxy"), r.path("stunnel")
	get := func(x sample) float64 { return x.getRPS }
	set := func(x sample) float64 { return x.setRPS }
	getCPU := func(x sample) float64 { return us(x.getCPU) }
	setCPU := func(x sample) float64 { return us(x.setCPU) }
	oneP99 := func(x sample) float64 { return x.oneP99 }

	fmt.Fprintf(&b, "redis-benchmark -c %d -n %d (GET and SET separately), %d round(s), paths interleaved; medians over the rounds,\n",
		s.conns, s.requests, s.rounds)
	fmt.Fprintf(&b, "ratios are medians of the ratios within each round. One connection: redis-benchmark -c 1 -n %d -t get.\n", s.latency)
	fmt.Fprintf(&b, "Fixed rate: %d GETs/s over %d connections for %s, open loop, latency from the scheduled send.\n", s.rate, s.rateConns, s.rateFor)
	fmt.Fprintf(&b, "CPU: user+system time of both proxies of the path (/proc/PID/stat) per request. RSS: the larger of the two, idle before any\n")
	fmt.Fprintf(&b, "traffic / peak during the %d-connection runs / idle after the last round. Anon: anonymous RSS (RssAnon), without the\n", s.conns)
	fmt.Fprintf(&b, "executable's and libraries' pages from the page cache, idle / peak under load.\n\n")

	b.WriteString("| path | GET/s | ×direct | ×HAProxy | ×stunnel | SET/s | ×direct | ×HAProxy | ×stunnel | 1 conn p50 / p99 ms | added p99 ms |")
	fmt.Fprintf(&b, " %d/s p50 / p99 / p99.9 ms | CPU µs/GET | ×HAProxy | CPU µs/SET | RSS MiB idle / load / after | anon MiB idle / load |\n", s.rate)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.paths {
		var addedP99 []float64
		for i := range min(len(p.rounds), len(direct.rounds)) {
			addedP99 = append(addedP99, p.rounds[i].oneP99-direct.rounds[i].oneP99)
		}
		added := ms(median(addedP99))
		if p == direct {
			added = "–"
		}
		ratios := func(f func(sample) float64) string {
			return strings.Join([]string{
				times(ratio(p, direct, f)), times(ratio(p, haproxy, f)), times(ratio(p, stunnel, f)),
			}, " | ")
		}
		cpuGet, cpuSet, cpuRatio := "–", "–", "–"
		if len(p.pids) > 0 {
			cpuGet = fmt.Sprintf("%.1f", median(per(p, getCPU)))
			cpuSet = fmt.Sprintf("%.1f", median(per(p, setCPU)))
			cpuRatio = times(ratio(p, haproxy, getCPU))
		}
		rate := fmt.Sprintf("%s / %s / %s",
			ms(median(per(p, func(x sample) float64 { return x.rateP50 }))),
			ms(median(per(p, func(x sample) float64 { return x.rateP99 }))),
			ms(median(per(p, func(x sample) float64 { return x.rateP999 }))))
		if answered := median(per(p, func(x sample) float64 { return x.rateAnswered })); answered < 0.99 {
			rate += fmt.Sprintf(" (only %.0f%% answered: overloaded)", 100*answered)
		}
		var loadPeak, anonPeak int64
		for _, x := range p.rounds {
			loadPeak, anonPeak = max(loadPeak, x.rssLoad), max(anonPeak, x.anonLoad)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s / %s / %s | %s / %s |\n",
			p.name,
			num(median(per(p, get))), ratios(get),
			num(median(per(p, set))), ratios(set),
			ms(median(per(p, func(x sample) float64 { return x.oneP50 }))), ms(median(per(p, oneP99))), added,
			rate, cpuGet, cpuRatio, cpuSet,
			mib(p.rssIdle), mib(loadPeak), mib(p.rssAfter), mib(p.anonIdle), mib(anonPeak))
	}
	b.WriteString("\nEvery round (GET/s, SET/s):\n\n")
	for _, p := range r.paths {
		var rs []string
		for _, x := range p.rounds {
			rs = append(rs, fmt.Sprintf("%s / %s", num(x.getRPS), num(x.setRPS)))
		}
		fmt.Fprintf(&b, "- %s: %s\n", p.name, strings.Join(rs, "; "))
	}
	b.WriteString("\nEvery round at one connection (p50 / p99 ms):\n\n")
	for _, p := range r.paths {
		var rs []string
		for _, x := range p.rounds {
			rs = append(rs, fmt.Sprintf("%s / %s", ms(x.oneP50), ms(x.oneP99)))
		}
		fmt.Fprintf(&b, "- %s: %s\n", p.name, strings.Join(rs, "; "))
	}
	fmt.Fprintf(&b, "\nMachine: %s\n", strings.Join(r.machine, "\n"))
	fmt.Fprintf(&b, "Load average (1, 5, 15 min): before %s; at each round %s; after %s\n",
		r.loadBefore, strings.Join(r.loadRounds, " | "), r.loadAfter)
	if len(r.sidecarArgs) > 0 {
		fmt.Fprintf(&b, "Sidecar flags: %s\n", strings.Join(r.sidecarArgs, " "))
	}
	fmt.Fprintf(&b, "Run at %s.\n", time.Now().UTC().Format(time.RFC3339))
	return b.String()
}
