package store_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

// openEncrypted opens the encrypted store under dir; the caller closes it.
func openEncrypted(t *testing.T, dir string, key store.Key) (*store.EncryptedBackend, error) {
	t.Helper()
	b, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	e, err := store.Encrypted(t.Context(), b, key)
	if err != nil {
		require.NoError(t, b.Close())
		return nil, err
	}
	return e, nil
}

func TestEncryptedRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	records := map[string][]byte{
		"sessions/flask":         []byte("name: flask\n"),
		"secrets/flask/api_ca":   bytes.Repeat([]byte{0xAB}, 4096),
		"secrets/redis/password": []byte("s3cret"),
	}
	s, err := openEncrypted(t, dir, testKey(7))
	require.NoError(t, err)
	for k, v := range records {
		require.NoError(t, s.Put(ctx, k, v))
	}
	require.NoError(t, s.Close())

	s, err = openEncrypted(t, dir, testKey(7))
	require.NoError(t, err, "reopening with the same key")
	defer s.Close()
	for k, v := range records {
		got, err := s.Get(ctx, k)
		require.NoError(t, err, k)
		assert.Equal(t, v, got, k)
	}
	all, err := s.List(ctx, "")
	require.NoError(t, err)
	assert.Len(t, all, len(records))
}

func TestEncryptedWrongKeyRefusedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := openEncrypted(t, dir, testKey(1))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	_, err = openEncrypted(t, dir, testKey(2))
	require.ErrorIs(t, err, store.ErrWrongKey)
	assert.EqualError(t, err, "store: wrong store key (the data dir was sealed with another key)")
}

func TestEncryptedRefusesForeignData(t *testing.T) {
	b := openBolt(t, t.TempDir())
	require.NoError(t, b.Put(t.Context(), "sessions/plain", []byte("plaintext")))
	_, err := store.Encrypted(t.Context(), b, testKey(1))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no key check value")

	_, err = store.Encrypted(t.Context(), openBolt(t, t.TempDir()), store.Key{})
	require.Error(t, err, "an all-zero key is refused")
}

func TestEncryptedReservedKeys(t *testing.T) {
	s, err := store.Encrypted(t.Context(), openBolt(t, t.TempDir()), testKey(1))
	require.NoError(t, err)
	_, err = s.Get(t.Context(), "\x00attestmesh/store-key-check")
	require.Error(t, err)
	require.Error(t, s.Put(t.Context(), "\x00attestmesh/x", []byte("v")))
	require.Error(t, s.Delete(t.Context(), "\x00attestmesh/store-key-check"))
}

func TestEncryptedSwappedCiphertextsRefused(t *testing.T) {
	ctx := t.Context()
	raw := openBolt(t, t.TempDir())
	s, err := store.Encrypted(ctx, raw, testKey(3))
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "secrets/a", []byte("value of a")))
	require.NoError(t, s.Put(ctx, "secrets/b", []byte("value of b")))

	a, err := raw.Get(ctx, "secrets/a")
	require.NoError(t, err)
	b, err := raw.Get(ctx, "secrets/b")
	require.NoError(t, err)
	require.NoError(t, raw.Put(ctx, "secrets/a", b))
	require.NoError(t, raw.Put(ctx, "secrets/b", a))

	for _, k := range []string{"secrets/a", "secrets/b"} {
		_, err := s.Get(ctx, k)
		require.ErrorIs(t, err, store.ErrCorrupt, k)
		assert.Contains(t, err.Error(), k)
		assert.NotContains(t, err.Error(), "value of")
	}
	_, err = s.List(ctx, "secrets/")
	require.ErrorIs(t, err, store.ErrCorrupt)
}

func TestEncryptedTamperRefused(t *testing.T) {
	ctx := t.Context()
	raw := openBolt(t, t.TempDir())
	s, err := store.Encrypted(ctx, raw, testKey(4))
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "secrets/k", []byte("sixteen byte val")))
	sealed, err := raw.Get(ctx, "secrets/k")
	require.NoError(t, err)
	require.Len(t, sealed, 1+12+16+16)

	tests := []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"key version byte", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"nonce", func(b []byte) []byte { b[5] ^= 0x80; return b }},
		{"ciphertext", func(b []byte) []byte { b[13] ^= 1; return b }},
		{"gcm tag", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"too short", func(b []byte) []byte { return b[:10] }},
		{"appended byte", func(b []byte) []byte { return append(b, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, raw.Put(ctx, "secrets/k", tt.mutate(bytes.Clone(sealed))))
			_, err := s.Get(ctx, "secrets/k")
			require.ErrorIs(t, err, store.ErrCorrupt)
			err = s.CompareAndSwap(ctx, "secrets/k", []byte("sixteen byte val"), []byte("x"))
			require.ErrorIs(t, err, store.ErrCorrupt, "a tampered record cannot be swapped either")
		})
	}
}

func TestEncryptedFileHoldsNoPlaintextKey(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	s, err := openEncrypted(t, dir, testKey(9))
	require.NoError(t, err)
	require.NoError(t, s.Put(t.Context(), "secrets/flask/flask_key", pemKey))
	require.NoError(t, s.Close())

	file, err := os.ReadFile(dir + "/" + store.BoltFileName)
	require.NoError(t, err)
	assert.True(t, bytes.Contains(file, []byte("secrets/flask/flask_key")), "record names stay plaintext")
	assert.False(t, bytes.Contains(file, pemKey), "the PEM key appears in the store file")
	assert.False(t, bytes.Contains(file, der), "the DER key appears in the store file")
	for _, line := range strings.Split(string(pemKey), "\n") {
		if line == "" || strings.HasPrefix(line, "-----") {
			continue
		}
		assert.False(t, bytes.Contains(file, []byte(line)), "a base64 line of the key appears in the store file: %q", line)
	}
}

func TestEncryptedNoncesAreFresh(t *testing.T) {
	ctx := t.Context()
	raw := openBolt(t, t.TempDir())
	s, err := store.Encrypted(ctx, raw, testKey(5))
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "k", []byte("same")))
	first, err := raw.Get(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "k", []byte("same")))
	second, err := raw.Get(ctx, "k")
	require.NoError(t, err)
	assert.NotEqual(t, first, second, "the same value sealed twice differs")
	assert.Equal(t, store.KeyVersion, first[0])
}

// FuzzOpenRecord feeds arbitrary bytes as a stored record: it must never panic and never open.
func FuzzOpenRecord(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{store.KeyVersion})
	f.Add(append([]byte{store.KeyVersion}, make([]byte, 40)...))
	f.Add(append([]byte{2}, make([]byte, 64)...))
	dir := f.TempDir()
	b, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(f, err)
	defer b.Close()
	ctx := context.Background()
	s, err := store.Encrypted(ctx, b, testKey(6))
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, sealed []byte) {
		require.NoError(t, b.Put(ctx, "fuzz", sealed))
		_, err := s.Get(ctx, "fuzz")
		require.ErrorIs(t, err, store.ErrCorrupt)
	})
}

// Apply writes several records on conditions over other records, all or nothing, and the
// sealed state stays right (the store reopens).
func TestEncryptedApply(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := openEncrypted(t, dir, testKey(7))
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "ns", []byte("v1")))
	require.NoError(t, s.Put(ctx, "gone", []byte("x")))

	// The condition holds: a record appears and another goes, together.
	require.NoError(t, s.Apply(ctx, []store.Cond{{Key: "ns", Value: []byte("v1")}, {Key: "child"}},
		[]store.Write{{Key: "child", Value: []byte("c")}, {Key: "gone"}}))
	got, err := s.Get(ctx, "child")
	require.NoError(t, err)
	assert.Equal(t, "c", string(got))
	_, err = s.Get(ctx, "gone")
	require.ErrorIs(t, err, store.ErrNotFound)

	// The condition fails: nothing changes.
	require.NoError(t, s.Put(ctx, "ns", []byte("v2")))
	err = s.Apply(ctx, []store.Cond{{Key: "ns", Value: []byte("v1")}}, []store.Write{{Key: "other", Value: []byte("o")}})
	require.ErrorIs(t, err, store.ErrConflict)
	_, err = s.Get(ctx, "other")
	require.ErrorIs(t, err, store.ErrNotFound)
	err = s.Apply(ctx, nil, []store.Write{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}})
	require.ErrorContains(t, err, `key "a" is written twice in one batch`)
	require.NoError(t, s.Close())

	s, err = openEncrypted(t, dir, testKey(7))
	require.NoError(t, err, "the sealed state matches the records")
	require.NoError(t, s.Close())
}
