// Package bench is `make bench-mesh`: Redis through the attestmesh sidecar pair, beside an
// HAProxy pair and a stunnel pair configured as equals and beside a direct connection, all from
// one network namespace to another across the same bridge, in one run, with one table.
//
// It starts a mesh with `attestmesh up`'s code (local.Up: the control plane, then a plaintext
// redis-server and a client service, each under the launcher with its sidecar, each in its own
// namespace on the bridge ambench, 10.234.0.0/24), a second redis-server for the direct path,
// and the two peers: one thread each (HAProxy nbthread 1; stunnel runs a thread per connection
// and cannot be told otherwise), TLS 1.3 with TLS_AES_128_GCM_SHA256, P-256 certificates,
// mutual verification. redis-benchmark and a fixed-rate client run in the client's namespace;
// the paths take turns (their order rotates every round) for several rounds, and the table
// shows the medians: GET and SET requests per second and their ratios, latency at one
// connection and at a fixed rate, the proxies' CPU time per request (from /proc) and their
// RSS, idle and under load. At the end everything it started is stopped and removed, and the
// test checks that nothing is left.
//
// The test carries the build tag benchmesh, so that `go test ./...` does not run it; it needs
// root and the Debian packages iproute2, redis-server, redis-tools, haproxy and stunnel4.
//
//	make bench-mesh            # three rounds (ROUNDS=n for more)
//	make bench-mesh SHORT=1    # one short round: checks that it runs and cleans up (CI)
package bench
