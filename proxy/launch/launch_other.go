//go:build !linux

package launch

import (
	"context"
	"errors"
	"log/slog"
)

// MaybeStage2 returns at once: stage 2 exists only on Linux.
func MaybeStage2(FSPFDecrypter) {}

func start(context.Context, *slog.Logger, Options, *plan) (int, error) {
	return -1, errors.New("launch: launching needs Linux mount namespaces to keep injected files private")
}
