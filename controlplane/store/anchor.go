package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Anchor keeps the highest generation a store has reached, outside the store, so that an older
// copy of the store put back in place is noticed (Options.Anchor). It belongs beside the store
// key, where whoever can restore the data directory cannot reach: a file next to the key file,
// or, in Kubernetes, a Secret.
//
// Concurrency contract: implementations are safe for concurrent use; Raise never lowers the
// recorded generation, so that several writers (replicas) may raise it in any order.
type Anchor interface {
	// Load returns the recorded generation, 0 when none was recorded yet.
	Load(ctx context.Context) (uint64, error)
	// Raise records gen unless a higher generation is recorded already.
	Raise(ctx context.Context, gen uint64) error
	// String names the anchor in messages ("file /etc/attestmesh/store.generation").
	String() string
}

// FileAnchor is an Anchor in a file (mode 0600), replaced atomically on every raise.
type FileAnchor struct {
	Path string

	mu   sync.Mutex
	last uint64
}

const anchorHeader = "attestmesh store generation "

// Load implements Anchor.
func (a *FileAnchor) Load(context.Context) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.loadLocked()
}

func (a *FileAnchor) loadLocked() (uint64, error) {
	b, err := os.ReadFile(a.Path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), anchorHeader)
	gen, err := strconv.ParseUint(v, 10, 64)
	if !ok || err != nil {
		return 0, fmt.Errorf("store: %s does not hold %q followed by a number", a.Path, anchorHeader)
	}
	a.last = max(a.last, gen)
	return gen, nil
}

// Raise implements Anchor.
func (a *FileAnchor) Raise(_ context.Context, gen uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen <= a.last {
		if cur, err := a.loadLocked(); err == nil && cur >= gen {
			return nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(a.Path), ".generation-*")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := fmt.Fprintf(tmp, "%s%d\n", anchorHeader, gen); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := os.Rename(tmp.Name(), a.Path); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	a.last = gen
	return nil
}

func (a *FileAnchor) String() string { return "file " + a.Path }
