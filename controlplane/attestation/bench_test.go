package attestation_test

import (
	"context"
	"crypto"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAttest measures attestations with SVID issuance over the real gRPC API: each
// one takes a nonce, quotes on the simulated platform (the client's work, in this process
// too), and sends quote and CSR; the control plane verifies the quote with its collateral,
// checks the nonce, the report data and the session's policy, and signs the SVID. clients
// is the number of concurrent callers; attest/s is the rate they reach together, and
// cpu-us/attest the CPU time of the whole process per attestation (client and server: on a
// shared machine, the steadier figure).
func BenchmarkAttest(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			f := newFixtureWith(b, fixtureOptions{peerRate: -1})
			f.createExample(b, "simulation", nil)
			// Keys are the workloads' own work, not the control plane's: made once.
			keys := make([]crypto.Signer, 64)
			for i := range keys {
				keys[i] = newKey(b)
			}
			var next atomic.Uint64
			b.SetParallelism(max(1, clients/max(1, runtimeProcs())))
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key := keys[next.Add(1)%uint64(len(keys))]
					if _, err := f.client.Attest(context.Background(), app("demo/flask/flask_restapi", key, pythonMR)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "attest/s")
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/attest")
		})
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// processCPU returns the user and system time of this process so far.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
