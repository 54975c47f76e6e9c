// Package e2e holds the end-to-end tests, run against the real binaries (the attestmesh
// binary, built by the test):
//
//   - TestFlaskRedis runs the Flask and Redis example: the control plane, sidecars and
//     launchers, Debian's redis-server, Flask under /usr/bin/python3 and a real Prometheus, each
//     service in its own network namespace on a private bridge (ame2e0, 10.233.0.0/24).
//   - TestTwoTeams replays the security review with two client identities.
//   - TestRecoverLostStoreKey follows the recovery workflow of docs/operations.md with keys
//     made by openssl (no root).
//   - TestChaos runs three etcd members (the real etcd server, built once from the module
//     proxy into ~/.cache/attestmesh/etcd) and three control-plane replicas on loopback
//     (127.0.1.0/24 and 127.0.2.0/24, fixed ports 2xxxx), a sidecar tunnel to redis-server, and
//     a client loop of 1,000 session updates and launcher attestations, while it kills a
//     replica and the etcd leader and stops another replica for 20 s; then it checks the
//     history with porcupine, every acknowledged write, the one CA and the tunnel, and
//     reports the fail-over times.
//
// The tests carry the build tag e2e, so that `go test ./...` does not run them. They need root
// and the Debian packages iproute2, redis-server, python3-flask, python3-redis and
// prometheus; without them they skip and say what is missing. Run them with
//
//	make e2e        # all of them
//	make e2e-chaos  # the chaos test alone
package e2e
