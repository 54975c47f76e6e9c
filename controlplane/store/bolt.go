package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// BoltFileName is the name of the bbolt file inside the data directory.
const BoltFileName = "store.db"

// DefaultLockTimeout is how long OpenBolt waits for the file lock held by another process.
const DefaultLockTimeout = time.Second

var boltBucket = []byte("attestmesh")

// BoltConfig configures the embedded bbolt backend.
type BoltConfig struct {
	// Dir is the data directory. It is created with mode 0700 when missing.
	Dir string
	// LockTimeout bounds the wait for another process's lock on the file; zero means
	// DefaultLockTimeout. A negative value is refused.
	LockTimeout time.Duration
	// ReadOnly opens an existing store file without creating or changing anything (a shared
	// lock: several readers at once, no writer); writes then fail. `attestmesh recover` reads
	// the store this way.
	ReadOnly bool
}

// Bolt is the embedded Backend: one bbolt file under the data directory, one bucket, fsync on
// every commit. It is safe for concurrent use; writes are serialized by bbolt and durable when
// they return.
type Bolt struct {
	db   *bolt.DB
	path string
}

var (
	_ Backend = (*Bolt)(nil)
	_ Engine  = (*Bolt)(nil)
)

// OpenBolt opens (or creates) the store file under cfg.Dir. A file locked by another process
// (another control plane on the same data dir) fails after cfg.LockTimeout with a clear error.
func OpenBolt(cfg BoltConfig) (*Bolt, error) {
	if cfg.Dir == "" {
		return nil, errors.New("store: no data directory given")
	}
	if cfg.LockTimeout < 0 {
		return nil, fmt.Errorf("store: lock timeout %v is negative", cfg.LockTimeout)
	}
	timeout := cfg.LockTimeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	if cfg.ReadOnly {
		return openBoltReadOnly(cfg.Dir, timeout)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create data dir: %w", err)
	}
	fi, err := os.Stat(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("store: data dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("store: data dir %s is not a directory", cfg.Dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		// Tighten a directory that we may have inherited with a looser mode; the file is
		// sealed anyway, but its metadata (record names, sizes) is nobody else's business.
		if err := os.Chmod(cfg.Dir, 0o700); err != nil { //nolint:gosec // G302: a directory needs its x bit; 0700 is owner-only
			return nil, fmt.Errorf("store: data dir %s has mode %04o and cannot be restricted to 0700: %w",
				cfg.Dir, fi.Mode().Perm(), err)
		}
	}
	path := filepath.Join(cfg.Dir, BoltFileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoSync: false})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store: %s is locked by another process (is another control plane running on this data dir?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: initialize %s: %w", path, err)
	}
	return &Bolt{db: db, path: path}, nil
}

func openBoltReadOnly(dir string, timeout time.Duration) (*Bolt, error) {
	path := filepath.Join(dir, BoltFileName)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("store: no store under --data-dir %s: %w", dir, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store: %s is not a regular file", path)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store: %s is locked by another process (stop the control plane on this data dir first): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(boltBucket) == nil {
			return fmt.Errorf("store: %s holds no attestmesh records", path)
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, err
	}
	return &Bolt{db: db, path: path}, nil
}

// Path returns the path of the bbolt file.
func (b *Bolt) Path() string { return b.path }

func checkKey(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if key == "" {
		return errors.New("store: empty key")
	}
	if len(key) > bolt.MaxKeySize {
		return fmt.Errorf("store: key of %d bytes is longer than %d", len(key), bolt.MaxKeySize)
	}
	return nil
}

// Get implements Backend.
func (b *Bolt) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(ctx, key); err != nil {
		return nil, err
	}
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v, ok := lookup(tx.Bucket(boltBucket), key)
		if !ok {
			return fmt.Errorf("%w: %q", ErrNotFound, key)
		}
		out = bytes.Clone(v)
		if out == nil {
			out = []byte{}
		}
		return nil
	})
	if err != nil {
		return nil, wrapBolt("get", key, err)
	}
	return out, nil
}

// lookup distinguishes a missing key from a key with an empty value.
func lookup(bkt *bolt.Bucket, key string) ([]byte, bool) {
	k, v := bkt.Cursor().Seek([]byte(key))
	if k == nil || string(k) != key {
		return nil, false
	}
	return v, true
}

// Put implements Backend.
func (b *Bolt) Put(ctx context.Context, key string, val []byte) error {
	if err := checkKey(ctx, key); err != nil {
		return err
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).Put([]byte(key), bytes.Clone(val))
	})
	return wrapBolt("put", key, err)
}

// CompareAndSwap implements Backend.
func (b *Bolt) CompareAndSwap(ctx context.Context, key string, old, newVal []byte) error {
	if err := checkKey(ctx, key); err != nil {
		return err
	}
	return wrapBolt("compare-and-swap", key, b.apply([]Cond{{Key: key, Value: old}}, []Write{{Key: key, Value: newVal}}))
}

// Apply implements Engine: one bbolt read-write transaction, fsynced on commit.
func (b *Bolt) Apply(ctx context.Context, conds []Cond, writes []Write) error {
	for _, c := range conds {
		if err := checkKey(ctx, c.Key); err != nil {
			return err
		}
	}
	for _, w := range writes {
		if err := checkKey(ctx, w.Key); err != nil {
			return err
		}
	}
	return wrapBolt("apply", "", b.apply(conds, writes))
}

func (b *Bolt) apply(conds []Cond, writes []Write) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bkt := tx.Bucket(boltBucket)
		for _, c := range conds {
			if err := holds(bkt, c); err != nil {
				return err
			}
		}
		for _, w := range writes {
			var err error
			if w.Value == nil {
				err = bkt.Delete([]byte(w.Key))
			} else {
				err = bkt.Put([]byte(w.Key), bytes.Clone(w.Value))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// holds checks one condition inside a transaction.
func holds(bkt *bolt.Bucket, c Cond) error {
	cur, ok := lookup(bkt, c.Key)
	switch {
	case c.Value == nil && ok:
		return fmt.Errorf("%w: %q already exists", ErrConflict, c.Key)
	case c.Value != nil && !ok:
		return fmt.Errorf("%w: %q does not exist", ErrConflict, c.Key)
	case c.Value != nil && !bytes.Equal(cur, c.Value):
		return fmt.Errorf("%w: %q holds another value", ErrConflict, c.Key)
	}
	return nil
}

// Delete implements Backend.
func (b *Bolt) Delete(ctx context.Context, key string) error {
	if err := checkKey(ctx, key); err != nil {
		return err
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).Delete([]byte(key))
	})
	return wrapBolt("delete", key, err)
}

// List implements Backend.
func (b *Bolt) List(ctx context.Context, prefix string) ([]KV, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var out []KV
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			val := bytes.Clone(v)
			if val == nil {
				val = []byte{}
			}
			out = append(out, KV{Key: string(k), Value: val})
		}
		return nil
	})
	if err != nil {
		return nil, wrapBolt("list", prefix, err)
	}
	return out, nil
}

// Close implements Backend. It is safe to call more than once.
func (b *Bolt) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", b.path, err)
	}
	return nil
}

// wrapBolt adds context to bbolt's own errors and passes ours through.
func wrapBolt(op, key string, err error) error {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		return err
	}
	if key == "" {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return fmt.Errorf("store: %s %q: %w", op, key, err)
}
