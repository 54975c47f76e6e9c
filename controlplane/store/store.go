package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned by CompareAndSwap when the current value is not the expected one.
var ErrConflict = errors.New("store: conflict")

// ErrWrongKey is returned by Encrypted when the store was sealed with another key.
var ErrWrongKey = errors.New("store: wrong store key (the data dir was sealed with another key)")

// ErrCorrupt is returned when a sealed record fails authentication: it was changed, truncated, or
// moved under another key name; or when the records do not match the store's sealed state digest.
var ErrCorrupt = errors.New("store: record failed authentication")

// ErrRollback is returned by Open when the store's generation is older than the generation its
// anchor recorded: an older copy of the store was put back.
var ErrRollback = errors.New("store: rolled back")

// KV is one record returned by List.
type KV struct {
	Key   string
	Value []byte
}

// Backend is a durable key-value store of opaque values under string keys.
//
// Concurrency contract: implementations are safe for concurrent use by multiple goroutines (and,
// for networked backends such as etcd, by several control-plane replicas). Every single-key
// operation is atomic. Put, CompareAndSwap and Delete are durable when they return nil: the write
// survives a crash or power loss from that moment on. Values returned by Get and List belong to the
// caller; values passed in may be reused by the caller after the call returns.
//
// Keys are non-empty strings; they are not secret and may be stored in plaintext. List returns the
// records whose key starts with prefix in ascending byte order of key.
type Backend interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put creates or replaces key.
	Put(ctx context.Context, key string, val []byte) error
	// CompareAndSwap sets key to newVal only if its current value equals old. A nil old means
	// the key must not exist; a non-nil old (even empty) means it must exist with that value.
	// A nil newVal deletes the key. When the condition fails it returns an error wrapping
	// ErrConflict and changes nothing.
	CompareAndSwap(ctx context.Context, key string, old, newVal []byte) error
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Apply checks every condition (on values as Get returns them) and, only if all hold,
	// applies every write, atomically and durably. A failed condition returns an error
	// wrapping ErrConflict and changes nothing.
	Apply(ctx context.Context, conds []Cond, writes []Write) error
	// List returns every record whose key starts with prefix, in ascending key order.
	List(ctx context.Context, prefix string) ([]KV, error)
	// Close releases the backend. Operations after Close fail.
	Close() error
}

// Engine is the durable key-value engine under the encrypted store: the embedded bbolt file
// (Bolt) or, for several replicas, etcd. Besides reads it offers one write primitive, an atomic
// conditional batch, which the encrypted layer uses to keep its sealed state (generation and
// digest) in step with every record it writes.
//
// Concurrency contract: as Backend's.
type Engine interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// List returns every record whose key starts with prefix, in ascending key order.
	List(ctx context.Context, prefix string) ([]KV, error)
	// Apply checks every condition and, only if all hold, applies every write, atomically and
	// durably. A failed condition returns an error wrapping ErrConflict and changes nothing.
	Apply(ctx context.Context, conds []Cond, writes []Write) error
	// Close releases the engine. Operations after Close fail.
	Close() error
}

// Cond is a condition of Engine.Apply: Key holds exactly Value; a nil Value means Key must not
// exist (a non-nil empty Value means it exists and is empty).
type Cond struct {
	Key   string
	Value []byte
}

// Write is a write of Engine.Apply: set Key to Value, or delete Key when Value is nil.
type Write struct {
	Key   string
	Value []byte
}
