package controlplane

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/recovery"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

func recoveryTestKey(name string) string {
	return filepath.Join("recovery", "testdata", name+".pub.pem")
}

// logLine is one JSON log line of the recovery subsystem.
type logLine struct {
	Level, Msg  string
	Record      string   `json:"record"`
	Threshold   int      `json:"threshold"`
	Keys        []string `json:"keys"`
	KeysAdded   []string `json:"keys_added"`
	KeysRemoved []string `json:"keys_removed"`
}

// TestKeepRecovery walks a store through the changes an operator makes to --recovery-key,
// --recovery-threshold and --remove-recovery-record, one start after another, and checks the
// record and what the log says each time.
func TestKeepRecovery(t *testing.T) {
	var key store.Key
	_, err := rand.Read(key[:])
	require.NoError(t, err)
	dir := t.TempDir()
	fps := map[string]string{}
	for _, n := range []string{"rsa3072", "x25519-a", "p256-sec1", "x25519-b", "rsa4096"} {
		k, err := recovery.ParsePublicKey(mustReadFile(t, recoveryTestKey(n)))
		require.NoError(t, err)
		fps[n] = k.Fingerprint().String()
	}
	var lastID string
	for _, tc := range []struct {
		name       string
		keys       []string
		threshold  int
		remove     bool
		before     func(t *testing.T, st *store.EncryptedBackend) // before the start, on the store as it is
		level      string
		msg        string
		newRecord  bool // a record with a new ID; else the previous one (or none, with threshold 0)
		want       []string
		threshold2 int // the record's threshold afterwards; 0: no record
		added      []string
		removed    []string
	}{
		{name: "no keys, no record", level: "INFO", msg: "no recovery keys: a lost store key cannot be recovered"},
		{name: "first keys", keys: []string{"rsa3072", "x25519-a", "p256-sec1"}, threshold: 2, level: "INFO",
			msg: "recovery record sealed: the store key is now also sealed to the recovery keys", newRecord: true,
			want: []string{"rsa3072", "x25519-a", "p256-sec1"}, threshold2: 2},
		{name: "same again", keys: []string{"rsa3072", "x25519-a", "p256-sec1"}, threshold: 2, level: "INFO", msg: "recovery record current",
			want: []string{"rsa3072", "x25519-a", "p256-sec1"}, threshold2: 2},
		{name: "another order", keys: []string{"p256-sec1", "rsa3072", "x25519-a"}, threshold: 2, level: "INFO", msg: "recovery record current",
			want: []string{"rsa3072", "x25519-a", "p256-sec1"}, threshold2: 2},
		{name: "threshold raised", keys: []string{"rsa3072", "x25519-a", "p256-sec1"}, threshold: 3, level: "WARN",
			msg: "recovery record sealed again: the recovery keys or the threshold changed; copies of the previous record", newRecord: true,
			want: []string{"rsa3072", "x25519-a", "p256-sec1"}, threshold2: 3},
		{name: "a key replaced", keys: []string{"rsa3072", "x25519-a", "x25519-b"}, threshold: 2, level: "WARN",
			msg: "copies of the previous record (exports, backups of the store) still recover the store key", newRecord: true,
			want: []string{"rsa3072", "x25519-a", "x25519-b"}, threshold2: 2, added: []string{"x25519-b"}, removed: []string{"p256-sec1"}},
		{name: "a key added", keys: []string{"rsa3072", "x25519-a", "x25519-b", "rsa4096"}, threshold: 2, level: "INFO",
			msg: "recovery record sealed again: the recovery keys or the threshold changed", newRecord: true,
			want: []string{"rsa3072", "x25519-a", "x25519-b", "rsa4096"}, threshold2: 2, added: []string{"rsa4096"}},
		{name: "flags forgotten", level: "WARN", msg: "recovery record kept, although no --recovery-key was given",
			want: []string{"rsa3072", "x25519-a", "x25519-b", "rsa4096"}, threshold2: 2},
		{name: "record changed by someone", keys: []string{"rsa3072"}, before: func(t *testing.T, st *store.EncryptedBackend) {
			t.Helper()
			raw, err := st.RecoveryRecord(t.Context())
			require.NoError(t, err)
			changed := bytes.Replace(raw, []byte(`"threshold": 2`), []byte(`"threshold": 1`), 1)
			require.NoError(t, st.SetRecoveryRecord(t.Context(), raw, changed))
		}, level: "WARN", msg: "recovery record sealed again: the stored one was of no use (it does not authenticate under this store key",
			newRecord: true, want: []string{"rsa3072"}, threshold2: 1},
		{name: "record of another store", before: func(t *testing.T, st *store.EncryptedBackend) {
			t.Helper()
			var other store.Key
			_, err := rand.Read(other[:])
			require.NoError(t, err)
			k, err := recovery.ParsePublicKey(mustReadFile(t, recoveryTestKey("x25519-b")))
			require.NoError(t, err)
			r, err := recovery.Seal(other, []*recovery.PublicKey{k}, 1)
			require.NoError(t, err)
			raw, err := st.RecoveryRecord(t.Context())
			require.NoError(t, err)
			require.NoError(t, st.SetRecoveryRecord(t.Context(), raw, r.Marshal()))
		}, level: "WARN", msg: "the store's recovery record is of no use (it does not authenticate under this store key"},
		{name: "garbage record", keys: []string{"x25519-a"}, before: func(t *testing.T, st *store.EncryptedBackend) {
			t.Helper()
			raw, err := st.RecoveryRecord(t.Context())
			require.NoError(t, err)
			require.NoError(t, st.SetRecoveryRecord(t.Context(), raw, []byte("garbage")))
		}, level: "WARN", msg: "recovery record sealed again: the stored one was of no use (recovery: malformed: record: invalid character",
			newRecord: true, want: []string{"x25519-a"}, threshold2: 1},
		{name: "removed", remove: true, level: "WARN", msg: "recovery record removed, as --remove-recovery-record says"},
		{name: "removed again", remove: true, level: "INFO", msg: "no recovery record to remove"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				st, err := openStore(t.Context(), Config{DataDir: dir, StoreKey: &key}, slog.New(slog.DiscardHandler))
				require.NoError(t, err)
				tc.before(t, st.EncryptedBackend)
				require.NoError(t, st.Close())
			}
			var logs bytes.Buffer
			cfg := Config{DataDir: dir, StoreKey: &key, RecoveryThreshold: tc.threshold, RemoveRecoveryRecord: tc.remove}
			for _, k := range tc.keys {
				cfg.RecoveryKeyFiles = append(cfg.RecoveryKeyFiles, recoveryTestKey(k))
			}
			st, err := openStore(t.Context(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
			require.NoError(t, err)
			defer st.Close()

			line := lastRecoveryLine(t, logs.String())
			assert.Equal(t, tc.level, line.Level)
			assert.Contains(t, line.Msg, tc.msg)
			assert.NotContains(t, logs.String(), strings.ToLower(strings.TrimSpace(string(store.AppendHexKey(nil, key)))), "the store key is never logged")

			raw, err := st.RecoveryRecord(t.Context())
			require.NoError(t, err)
			if tc.threshold2 == 0 {
				if tc.name != "record of another store" {
					assert.Nil(t, raw, "no record")
				}
				return
			}
			rec, err := recovery.ParseRecord(raw)
			require.NoError(t, err)
			require.NoError(t, rec.Authenticate(key))
			assert.Equal(t, tc.threshold2, rec.Threshold())
			var want []string
			for _, n := range tc.want {
				want = append(want, fps[n])
			}
			var got []string
			for _, f := range rec.Keys() {
				got = append(got, f.String())
			}
			assert.ElementsMatch(t, want, got)
			assert.Equal(t, rec.ID().String(), line.Record, "the log names the record")
			if tc.newRecord {
				assert.NotEqual(t, lastID, rec.ID().String(), "sealed again")
			} else {
				assert.Equal(t, lastID, rec.ID().String(), "the same record")
			}
			lastID = rec.ID().String()
			var added, removed []string
			for _, n := range tc.added {
				added = append(added, fps[n])
			}
			for _, n := range tc.removed {
				removed = append(removed, fps[n])
			}
			assert.Equal(t, added, line.KeysAdded)
			assert.Equal(t, removed, line.KeysRemoved)
		})
	}
}

func lastRecoveryLine(t *testing.T, logs string) logLine {
	t.Helper()
	var last *logLine
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		if m["subsystem"] != "recovery" {
			continue
		}
		var line logLine
		require.NoError(t, json.Unmarshal([]byte(l), &line))
		last = &line
	}
	require.NotNil(t, last, "a recovery log line in:\n%s", logs)
	return *last
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
