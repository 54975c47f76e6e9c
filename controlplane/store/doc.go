// Package store is the control plane's durable state: sessions, generated secrets and the CA
// live here, every value sealed at rest.
//
// Two layers compose. A Backend is a plain durable key-value store with an atomic
// CompareAndSwap (the session update's predecessor check needs one); Bolt is the embedded
// implementation (one bbolt file, store.db, under --data-dir, fsync on every commit) and an etcd
// implementation can follow for several replicas. EncryptedBackend wraps any Backend and seals
// every value with AES-256-GCM under the store key, binding the record's name so that records
// cannot be swapped, and refuses at start a store that was sealed with another key.
//
//	b, err := store.OpenBolt(store.BoltConfig{Dir: dataDir})
//	key, err := store.LoadKey(store.KeyConfig{File: keyFile, DataDir: dataDir})
//	s, err := store.Encrypted(ctx, b, key)
//
// # Where the store key comes from
//
// The key is never stored next to the data in plaintext. LoadKey takes it from exactly one of:
//
//   - a key file (--store-key-file): 32 random bytes, raw or as 64 hex characters, readable by
//     its owner only (mode 0600 or 0400). In Kubernetes this is a Secret mounted as a file with
//     defaultMode: 0400. A key file inside the data directory is refused.
//   - the environment variable ATTESTMESH_STORE_KEY, 64 hex characters.
//
// GenerateKeyFile creates a key file (mode 0600, never overwriting one) for the first start.
// Losing the key loses the store: back it up separately from the data directory, and seal it to
// recovery keys (package controlplane/recovery): the recovery record is the one reserved record
// that is readable without the key (RecoveryRecord, ReadRecoveryRecord), and Verify checks a
// recovered key against the store without writing to it.
//
// In SCONE, the CAS runs inside an enclave and seals its database with a key derived from the
// enclave's sealing key, so only the same CAS code on the same CPU can open it. attestmesh's
// control plane runs as a normal process, so the operator supplies the key; a hardware deployment
// would obtain it by unsealing it with the SGX sealing key bound to the control plane's
// MRENCLAVE (EGETKEY with KEYPOLICY=MRENCLAVE), and LoadKey is the single place to change.
// See docs/operations.md.
package store
