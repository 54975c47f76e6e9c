package cli

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLogLevelSet(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
		err  bool
	}{
		{in: "debug", want: slog.LevelDebug},
		{in: "info", want: slog.LevelInfo},
		{in: "warn", want: slog.LevelWarn},
		{in: "error", want: slog.LevelError},
		{in: "WARN", want: slog.LevelWarn},
		{in: "verbose", err: true},
		{in: "warning", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			l := logLevel(slog.LevelInfo)
			err := l.Set(tt.in)
			if tt.err {
				require.ErrorIs(t, err, errLogLevel)
				assert.Equal(t, logLevel(slog.LevelInfo), l, "a refused value leaves the level alone")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, slog.Level(l))
		})
	}
}
