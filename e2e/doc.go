// Package e2e holds the end-to-end test of the Flask and Redis example: the real control
// plane, sidecars and launchers (the attestmesh binary, built by the test), Debian's
// redis-server, Flask under /usr/bin/python3 and a real Prometheus, each service in its own
// network namespace on a private bridge (ame2e0, 10.233.0.0/24).
//
// The test carries the build tag e2e, so that `go test ./...` does not run it. It needs root
// and the Debian packages iproute2, redis-server, python3-flask, python3-redis and
// prometheus; without them it skips and says what is missing. Beside it, TestTwoTeams replays
// the security review with two client identities (root), and TestRecoverLostStoreKey follows
// the recovery workflow of docs/operations.md with keys made by openssl (no root). Run them with
//
//	make e2e
package e2e
