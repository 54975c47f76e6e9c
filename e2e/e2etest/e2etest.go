// Package e2etest holds what the end-to-end tests (e2e, e2e/k8s, e2e/bench) share: reading
// Prometheus endpoints and finding the links and namespaces a test made on its own bridge.
package e2etest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Get returns the body of u, which must answer 200 within 10 s.
func Get(ctx context.Context, u string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	return string(b), nil
}

// Scrape returns the text of a Prometheus endpoint.
func Scrape(ctx context.Context, t require.TestingT, u string) string {
	text, err := Get(ctx, u)
	require.NoError(t, err)
	return text
}

// Sample returns the value of series (name{labels} exactly as exposed) in text; 0 when absent,
// as a counter that was never incremented.
func Sample(text, series string) float64 {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			if fields := strings.Fields(v); len(fields) > 0 {
				if f, err := strconv.ParseFloat(fields[0], 64); err == nil {
					return f
				}
			}
		}
	}
	return 0
}

// Ours lists, from `ip args...` (`ip netns list` or `ip -o link show`), the names a test's
// bridge accounts for: the bridge, its namespaces (bridge-...) and their veths (vbridge...).
func Ours(ctx context.Context, t *testing.T, bridge string, args ...string) []string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ip", args...).Output()
	require.NoError(t, err, "ip %s", strings.Join(args, " "))
	var names []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name := f[0] // ip netns list: NAME (id: N)
		if len(f) > 1 && strings.HasSuffix(f[0], ":") {
			name = strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":") // ip -o link: N: NAME[@PEER]: ...
		}
		if name == bridge || strings.HasPrefix(name, bridge+"-") || strings.HasPrefix(name, "v"+bridge) {
			names = append(names, name)
		}
	}
	return names
}

// CIEnv, when set (.ci/run sets it), makes a missing prerequisite fail the test instead of
// skipping it: CI installs everything, so a skip there would hide a broken machine.
const CIEnv = "ATTESTMESH_CI"

// Prerequisite skips tb for reason (something this machine lacks), or fails it under CI.
func Prerequisite(tb testing.TB, reason string) {
	tb.Helper()
	if fail, msg := prerequisiteVerdict(reason); fail {
		tb.Fatal(msg)
	}
	tb.Skip(reason)
}

func prerequisiteVerdict(reason string) (fail bool, msg string) {
	if os.Getenv(CIEnv) != "" {
		return true, fmt.Sprintf("%s (%s is set: CI installs every prerequisite, so none may be missing)", reason, CIEnv)
	}
	return false, reason
}
