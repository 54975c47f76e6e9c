package cli_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
)

// A --log-level that is not a level stops the command before it does anything, and says which
// flag, which value, and what it accepts.
func TestLogLevelRefused(t *testing.T) {
	for _, args := range [][]string{
		{"controlplane", "--log-level", "verbose"},
		{"proxy", "--config-id", "s/svc", "--log-level", "verbose"},
		{"launch", "--config-id", "s/svc", "--log-level", "verbose", "--", "/bin/true"},
	} {
		t.Run(args[0], func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli.Run(t.Context(), args, &stdout, &stderr)
			assert.Equal(t, 1, code)
			assert.Equal(t, "attestmesh: invalid argument \"verbose\" for \"--log-level\" flag: want debug, info, warn or error\n", stderr.String())
			assert.Empty(t, stdout.String())
		})
	}
}
