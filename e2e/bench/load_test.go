//go:build benchmesh

package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/local"
)

// benchResult is one line of `redis-benchmark --csv`.
type benchResult struct {
	rps, p50, p99 float64 // requests per second; latency in ms
}

// redisBenchmark runs redis-benchmark in namespace ns against addr: conns connections, n
// requests of test (set, get or both) with the default 3-byte values.
func redisBenchmark(ctx context.Context, ns, addr string, conns, n int, test string) (benchResult, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return benchResult{}, err
	}
	// Bounded: even a path at 1,000 requests per second finishes well within it.
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(n)*time.Millisecond)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "redis-benchmark", "-h", host, "-p", port,
		"-c", strconv.Itoa(conns), "-n", strconv.Itoa(n), "-t", test, "--csv")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return benchResult{}, fmt.Errorf("redis-benchmark -c %d -n %d -t %s against %s: %w\n%s", conns, n, test, addr, err, out)
	}
	rows, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil {
		return benchResult{}, fmt.Errorf("redis-benchmark: %w\n%s", err, out)
	}
	if len(rows) < 2 || len(rows[0]) < 7 {
		return benchResult{}, fmt.Errorf("redis-benchmark: unexpected output:\n%s", out)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	last := rows[len(rows)-1]
	var r benchResult
	for name, dst := range map[string]*float64{"rps": &r.rps, "p50_latency_ms": &r.p50, "p99_latency_ms": &r.p99} {
		i, ok := col[name]
		if !ok {
			return benchResult{}, fmt.Errorf("redis-benchmark: no column %q in %v", name, rows[0])
		}
		if *dst, err = strconv.ParseFloat(last[i], 64); err != nil {
			return benchResult{}, fmt.Errorf("redis-benchmark: column %q: %w", name, err)
		}
	}
	return r, nil
}

// getCommand is a GET of the key redis-benchmark's SET writes.
const getCommand = "*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"

// waitPing waits until a PING through addr, from namespace ns, answers PONG.
func waitPing(ctx context.Context, ns, addr string, timeout time.Duration, daemons []*daemon) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ping(ctx, ns, addr)
		if err == nil {
			return nil
		}
		for _, d := range daemons {
			if d.exited() {
				return fmt.Errorf("%s exited (log %s): %w", d.name, d.log, cmp.Or(d.err, errors.New("status 0")))
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func ping(ctx context.Context, ns, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := local.DialIn(dctx, ns, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "*1\r\n$4\r\nPING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING: got %q", line)
	}
	return nil
}

// latencies are request latencies.
type latencies []time.Duration

// percentile returns the p-th percentile in milliseconds (nearest rank).
func (l latencies) percentile(p float64) float64 {
	if len(l) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(l)))) - 1
	i = min(max(i, 0), len(l)-1)
	return float64(l[i]) / float64(time.Millisecond)
}

// rateResult is a fixed-rate run: the latencies of the answered requests, sorted, and how many
// requests were due.
type rateResult struct {
	lat latencies
	due int
}

// fixedRate sends GETs at rate per second in total over conns connections from namespace ns
// for d, open loop: connection i sends its k-th request at start + (k*conns+i)/rate, and a
// request's latency runs from that scheduled time (so a late answer that delays the next
// request counts against the path, not the generator). A path that cannot keep up answers
// fewer requests than were due: sending stops at the end of d, and answers still missing five
// seconds later are not waited for.
func fixedRate(ctx context.Context, ns, addr string, rate, conns int, d time.Duration) (rateResult, error) {
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			_ = c.Close()
		}
	}()
	for range conns {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := local.DialIn(dctx, ns, "tcp", addr)
		cancel()
		if err != nil {
			return rateResult{}, err
		}
		cs = append(cs, c)
	}
	interval := time.Second / time.Duration(rate)
	start := time.Now().Add(10 * time.Millisecond)
	end := start.Add(d)
	var (
		mu   sync.Mutex
		res  = rateResult{due: int(d / interval)}
		errs []error
		wg   sync.WaitGroup
	)
	for i, c := range cs {
		wg.Go(func() {
			_ = c.SetDeadline(end.Add(5 * time.Second))
			r := bufio.NewReader(c)
			var own latencies
			var err error
			for k := 0; ; k++ {
				at := start.Add(time.Duration(k*conns+i) * interval)
				if at.After(end) || time.Now().After(end) {
					break
				}
				if wait := time.Until(at); wait > 0 {
					time.Sleep(wait)
				}
				if _, err = io.WriteString(c, getCommand); err != nil {
					break
				}
				if err = readReply(r); err != nil {
					break
				}
				own = append(own, time.Since(at))
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = nil // overloaded: counted as answers missing
			}
			mu.Lock()
			defer mu.Unlock()
			res.lat = append(res.lat, own...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rateResult{}, err
	}
	slices.Sort(res.lat)
	return res, nil
}

// readReply reads one RESP reply: a line, and for a bulk string its payload.
func readReply(r *bufio.Reader) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 {
		return fmt.Errorf("short reply %q", line)
	}
	switch line[0] {
	case '$':
		n, err := strconv.Atoi(strings.TrimSpace(string(line[1:])))
		if err != nil {
			return fmt.Errorf("bulk length %q: %w", line, err)
		}
		if n >= 0 {
			_, err = r.Discard(n + 2)
		}
		return err
	case '-':
		return fmt.Errorf("redis: %s", strings.TrimSpace(string(line[1:])))
	default:
		return nil
	}
}
