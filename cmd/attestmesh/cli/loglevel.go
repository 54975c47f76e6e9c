package cli

import (
	"errors"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// logLevel is the --log-level flag: slog's level names, in any case (debug, info, warn,
// error). Anything else fails the command line at parse time, naming the flag and the value,
// instead of quietly logging at info.
type logLevel slog.Level

var _ pflag.Value = (*logLevel)(nil)

var errLogLevel = errors.New("want debug, info, warn or error")

func (l *logLevel) String() string { return strings.ToLower(slog.Level(*l).String()) }

// Type is the word the help shows for the flag's value.
func (l *logLevel) Type() string { return "string" }

func (l *logLevel) Set(s string) error {
	var v slog.Level
	if err := v.UnmarshalText([]byte(s)); err != nil {
		return errLogLevel
	}
	*l = logLevel(v)
	return nil
}

// registerLogLevel adds --log-level to f, default info.
func registerLogLevel(f *pflag.FlagSet, l *logLevel) {
	*l = logLevel(slog.LevelInfo)
	f.Var(l, "log-level", "debug, info, warn or error")
}

func newLogger(level logLevel) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.Level(level)}))
}
