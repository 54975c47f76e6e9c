package attestation_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/sim"
)

// BenchmarkAttest measures attestations with SVID issuance over the real gRPC API: each
// one takes a nonce, quotes on the simulated platform (the client's work, in this process
// too), and sends quote and CSR; the control plane verifies the quote with its collateral,
// checks the nonce, the report data and the session's policy, and signs the SVID. clients
// is the number of concurrent callers; attest/s is the rate they reach together, and
// cpu-us/attest the CPU time of the whole process per attestation (client and server: on a
// shared machine, the steadier figure). BenchmarkAttestSplit measures the two halves apart.
func BenchmarkAttest(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			f := newFixtureWith(b, fixtureOptions{peerRate: -1})
			f.createExample(b, "simulation", nil)
			runAttest(b, f.client, clients, nil, false)
		})
	}
}

// BenchmarkAttestSplit is BenchmarkAttest with the control plane in a child process (this
// test binary again, running TestAttestServerProcess), so that each half's CPU time is
// measured on its own: srv-cpu-us/attest is the control plane's process (gRPC server,
// nonces, quote verification, session lookup, CSR check, SVID signing, response);
// cli-cpu-us/attest is this process, the clients (gRPC client, a CSR signed by each, each
// quote signed on the simulated platform, the response parsed); cpu-us/attest is their sum;
// srv-cpu-bound-attest/s is the rate that the control plane's CPU time per attestation allows
// on all of the machine's cores, were the clients on other machines (an upper bound: it
// assumes that the control plane scales to every core).
// B/op and allocs/op are this process's. With -cpuprofile or -memprofile FILE the server
// process writes its own profiles to FILE.server.
func BenchmarkAttestSplit(b *testing.B) {
	srv := startServerProcess(b)
	platform, err := sim.UnmarshalPlatform(srv.info.Platform)
	require.NoError(b, err)
	bundle, err := x509.ParseCertificate(srv.info.Bundle)
	require.NoError(b, err)
	client, err := attestapi.Dial(attestapi.ClientConfig{Addr: srv.info.Addr, Bundle: []*x509.Certificate{bundle}, Quotes: platformQuotes{platform}})
	require.NoError(b, err)
	b.Cleanup(func() { _ = client.Close() })
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) { runAttest(b, client, clients, srv, false) })
	}
	b.Run("clients=64,new-keys", func(b *testing.B) { runAttest(b, client, 64, srv, true) })
}

// runAttest attests from clients concurrent callers, b.N times in all, and reports the rate
// and the CPU time per attestation: of this process and, with srv, of the server's apart.
//
// Without newKeys, 64 workloads attest again and again, as sidecars and launchers do (each
// keeps its key: renewals, grants): their keys are made once, and each sends the same CSR
// every time (attestapi.Client keeps it), which the control plane remembers from the first
// time (see ca.ParseCSR). With newKeys every attestation is a workload's first: 8,192 keys
// take turns, far more than the client (64) or the control plane (4,096) keeps CSRs of, so each
// attestation signs a new CSR, which the control plane parses and checks. Keys are the
// workloads' own work, not the control plane's: made before the timer starts, in both cases.
// Every attestation has its own nonce and quote either way.
func runAttest(b *testing.B, client *attestapi.Client, clients int, srv *serverProcess, newKeys bool) {
	b.Helper()
	n := 64
	if newKeys {
		n = 8192
	}
	keys := make([]crypto.Signer, n)
	for i := range keys {
		keys[i] = newKey(b)
	}
	var next atomic.Uint64
	b.SetParallelism(max(1, clients/max(1, runtimeProcs())))
	b.ReportAllocs()
	var srv0 time.Duration
	if srv != nil {
		srv0 = srv.cpu(b)
	}
	cpu0 := processCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := keys[next.Add(1)%uint64(len(keys))]
			if _, err := client.Attest(context.Background(), app("demo/flask/flask_restapi", key, pythonMR)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	perAttest := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "attest/s")
	own := processCPU(b) - cpu0
	if srv == nil {
		b.ReportMetric(perAttest(own), "cpu-us/attest")
		return
	}
	server := srv.cpu(b) - srv0
	b.ReportMetric(perAttest(own+server), "cpu-us/attest")
	b.ReportMetric(perAttest(server), "srv-cpu-us/attest")
	// The clients share the machine's cores with the control plane here; where they run
	// elsewhere, its CPU time per attestation allows this rate on all of this machine's cores.
	b.ReportMetric(float64(runtime.NumCPU())*1e6/perAttest(server), "srv-cpu-bound-attest/s")
	b.ReportMetric(perAttest(own), "cli-cpu-us/attest")
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// processCPU returns the user and system time of this process so far.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverEnv makes TestAttestServerProcess serve (see BenchmarkAttestSplit).
const serverEnv = "ATTESTMESH_BENCH_ATTEST_SERVER"

// serverInfo is what the server process tells the benchmark: where it serves, its CA and
// the simulated platform that its sessions accept quotes of.
type serverInfo struct {
	Addr     string
	Bundle   []byte
	Platform []byte
}

// TestAttestServerProcess is the control plane of BenchmarkAttestSplit, in a process of its
// own: the fixture's attestation server with the example sessions. It writes "server " and
// its serverInfo as JSON, then answers every line on its standard input with "cpu " and its
// CPU time in nanoseconds, until standard input closes.
func TestAttestServerProcess(t *testing.T) {
	if os.Getenv(serverEnv) != "1" {
		t.Skip("the server process of BenchmarkAttestSplit, which starts it")
	}
	f := newFixtureWith(t, fixtureOptions{peerRate: -1})
	f.createExample(t, "simulation", nil)
	platform, err := f.platform.Marshal()
	require.NoError(t, err)
	info, err := json.Marshal(serverInfo{Addr: f.addr, Bundle: f.auth.Bundle()[0].Raw, Platform: platform})
	require.NoError(t, err)
	fmt.Printf("server %s\n", info)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Printf("cpu %d\n", processCPU(t).Nanoseconds())
	}
}

// serverProcess is TestAttestServerProcess running in a child process.
type serverProcess struct {
	info serverInfo
	in   io.WriteCloser
	out  *bufio.Scanner
}

// startServerProcess starts TestAttestServerProcess in a child process, stopped when the
// benchmark ends.
func startServerProcess(b *testing.B) *serverProcess {
	b.Helper()
	args := []string{"-test.run=^TestAttestServerProcess$", "-test.count=1"}
	for _, name := range []string{"test.cpuprofile", "test.memprofile"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			args = append(args, "-"+name+"="+f.Value.String()+".server")
		}
	}
	cmd := exec.CommandContext(context.WithoutCancel(b.Context()), os.Args[0], args...)
	cmd.Env = append(os.Environ(), serverEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	require.NoError(b, err)
	out, err := cmd.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, cmd.Start())
	b.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Wait()
	})
	p := &serverProcess{in: in, out: bufio.NewScanner(out)}
	p.out.Buffer(nil, 1<<20)
	line := p.expect(b, "server ")
	require.NoError(b, json.Unmarshal([]byte(line), &p.info))
	return p
}

// expect reads the server's output up to the next line that starts with prefix and returns
// the rest of that line.
func (p *serverProcess) expect(tb testing.TB, prefix string) string {
	tb.Helper()
	for p.out.Scan() {
		if rest, ok := strings.CutPrefix(p.out.Text(), prefix); ok {
			return rest
		}
	}
	tb.Fatalf("the server process ended without a %q line: %v", prefix, p.out.Err())
	return ""
}

// cpu returns the server process's CPU time so far.
func (p *serverProcess) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	_, err := io.WriteString(p.in, "cpu\n")
	require.NoError(tb, err)
	ns, err := strconv.ParseInt(p.expect(tb, "cpu "), 10, 64)
	require.NoError(tb, err)
	return time.Duration(ns)
}
