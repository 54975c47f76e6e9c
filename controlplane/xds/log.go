package xds

import (
	"context"
	"fmt"
	"log/slog"

	cplog "github.com/envoyproxy/go-control-plane/pkg/log"
)

// slogAdapter gives go-control-plane's cache and server a log/slog logger.
type slogAdapter struct{ l *slog.Logger }

var _ cplog.Logger = slogAdapter{}

func (a slogAdapter) Debugf(format string, args ...any) { a.log(slog.LevelDebug, format, args) }
func (a slogAdapter) Infof(format string, args ...any)  { a.log(slog.LevelInfo, format, args) }
func (a slogAdapter) Warnf(format string, args ...any)  { a.log(slog.LevelWarn, format, args) }
func (a slogAdapter) Errorf(format string, args ...any) { a.log(slog.LevelError, format, args) }

func (a slogAdapter) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !a.l.Enabled(ctx, level) {
		return
	}
	a.l.Log(ctx, level, fmt.Sprintf(format, args...))
}
