package recovery

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

func randomKey(t *testing.T) store.Key {
	t.Helper()
	var k store.Key
	_, err := rand.Read(k[:])
	require.NoError(t, err)
	return k
}

// holders are the recovery keys of the tests: every kind, private halves from testdata.
var holders = []string{"rsa3072", "x25519-a", "p256-sec1", "rsa4096", "x25519-b", "p256-pkcs8"}

func sealTo(t *testing.T, key store.Key, names []string, threshold int) *Record {
	t.Helper()
	pubs := make([]*PublicKey, len(names))
	for i, n := range names {
		pubs[i] = testPublicKey(t, n)
	}
	r, err := Seal(key, pubs, threshold)
	require.NoError(t, err)
	return r
}

// roundTrip passes the record through its stored form, as `recover` reads it.
func roundTrip(t *testing.T, r *Record) *Record {
	t.Helper()
	p, err := ParseRecord(r.Marshal())
	require.NoError(t, err)
	return p
}

func decrypt(t *testing.T, r *Record, names ...string) []*Share {
	t.Helper()
	var out []*Share
	for _, n := range names {
		s, err := r.Decrypt(testPrivateKey(t, n))
		require.NoError(t, err, n)
		out = append(out, s)
	}
	return out
}

func TestRecoverWithKOfN(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keys      []string
		threshold int
		use       [][]string // every one of these sets recovers
	}{
		{"one key", holders[:1], 1, [][]string{{"rsa3072"}}},
		{"1 of 3 (the default)", holders[:3], 0, [][]string{{"rsa3072"}, {"x25519-a"}, {"p256-sec1"}}},
		{"2 of 3", holders[:3], 2, [][]string{{"rsa3072", "x25519-a"}, {"x25519-a", "p256-sec1"}, {"p256-sec1", "rsa3072"}, holders[:3]}},
		{"3 of 3", holders[:3], 3, [][]string{holders[:3]}},
		{"3 of 6", holders, 3, [][]string{{"rsa4096", "x25519-b", "p256-pkcs8"}, {"rsa3072", "p256-sec1", "x25519-b"}, holders}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := randomKey(t)
			r := roundTrip(t, sealTo(t, key, tc.keys, tc.threshold))
			require.NoError(t, r.Authenticate(key))
			for _, names := range tc.use {
				got, err := Combine(r, decrypt(t, r, names...))
				require.NoError(t, err, names)
				assert.Equal(t, key, got, names)
			}
		})
	}
}

func TestRefusedWithTooFewShares(t *testing.T) {
	key := randomKey(t)
	r := roundTrip(t, sealTo(t, key, holders[:3], 2))
	shares := decrypt(t, r, "x25519-a")
	_, err := Combine(r, shares)
	require.ErrorIs(t, err, ErrTooFewShares)
	fps := opensslFingerprints(t)
	msg := err.Error()
	assert.Contains(t, msg, "needs 2 of its 3 shares, and 1 was given: share 2 ("+fps["x25519-a"]+")")
	assert.Contains(t, msg, "1 more from the keys "+fps["rsa3072"]+" (share 1), "+fps["p256-sec1"]+" (share 3)")

	// The same share twice is still one share.
	_, err = Combine(r, append(shares, decrypt(t, r, "x25519-a")...))
	require.ErrorIs(t, err, ErrTooFewShares)

	_, err = Combine(r, nil)
	require.ErrorIs(t, err, ErrTooFewShares)
	assert.Contains(t, err.Error(), "none was given")
}

func TestRefusedWithAWrongKey(t *testing.T) {
	key := randomKey(t)
	r := roundTrip(t, sealTo(t, key, holders[:3], 2))
	_, err := r.Decrypt(testPrivateKey(t, "rsa4096"))
	require.ErrorIs(t, err, ErrNotRecoveryKey)
	fps := opensslFingerprints(t)
	assert.Contains(t, err.Error(), "the key "+fps["rsa4096"]+" is not one of the keys")
	assert.Contains(t, err.Error(), "which expects 2 of 3 shares, from the keys "+fps["rsa3072"]+" (share 1), "+fps["x25519-a"]+" (share 2), "+fps["p256-sec1"]+" (share 3)")

	// The record authenticates only under the key that sealed it.
	require.ErrorIs(t, r.Authenticate(randomKey(t)), ErrTampered)
}

// tamper changes the record's JSON form with f and parses it again.
func tamper(t *testing.T, r *Record, f func(j *recordJSON)) *Record {
	t.Helper()
	var j recordJSON
	require.NoError(t, json.Unmarshal(r.Marshal(), &j))
	f(&j)
	b, err := json.Marshal(j)
	require.NoError(t, err)
	p, err := ParseRecord(b)
	require.NoError(t, err)
	return p
}

func flipBase64(t *testing.T, s string, at int) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	require.NoError(t, err)
	b[at%len(b)] ^= 1
	return base64.StdEncoding.EncodeToString(b)
}

func TestRefusedWithATamperedRecord(t *testing.T) {
	key := randomKey(t)
	orig := sealTo(t, key, holders[:3], 2)
	// An attacker who can write the store but knows no key can still seal a share of its own
	// choosing to a holder's public key, with a matching commitment: only the MAC finds that.
	forged := func(j *recordJSON) {
		var v [store.KeySize]byte
		_, _ = rand.Read(v[:])
		c := commitment(orig.id, 2, &v)
		ct, err := testPublicKey(t, "x25519-a").seal(orig.shareContext(2, orig.entries[1].key), v[:])
		require.NoError(t, err)
		j.Shares[1].Commitment = fmt.Sprintf("%x", c)
		j.Shares[1].Ciphertext = base64.StdEncoding.EncodeToString(ct)
	}
	for _, tc := range []struct {
		name   string
		change func(j *recordJSON)
		// where it is found: at decryption of share 2 ("decrypt") or at combination ("combine").
		at, want string
	}{
		{"ciphertext bit flipped", func(j *recordJSON) { j.Shares[1].Ciphertext = flipBase64(t, j.Shares[1].Ciphertext, 40) }, "decrypt", "its ciphertext was changed"},
		{"RSA ciphertext bit flipped", func(j *recordJSON) { j.Shares[0].Ciphertext = flipBase64(t, j.Shares[0].Ciphertext, 100) }, "decrypt-rsa", "its ciphertext was changed"},
		{"ciphertexts swapped", func(j *recordJSON) {
			j.Shares[1].Ciphertext, j.Shares[2].Ciphertext = j.Shares[2].Ciphertext, j.Shares[1].Ciphertext
			j.Shares[1].Alg, j.Shares[2].Alg = j.Shares[2].Alg, j.Shares[1].Alg
		}, "decrypt", "does not decrypt"},
		{"indices swapped", func(j *recordJSON) { j.Shares[1].Index, j.Shares[2].Index = 3, 2 }, "decrypt", "its ciphertext was changed"},
		{"threshold lowered", func(j *recordJSON) { j.Threshold = 1 }, "decrypt", "its ciphertext was changed"},
		{"commitment changed", func(j *recordJSON) { j.Shares[1].Commitment = strings.Repeat("ab", 32) }, "decrypt", "does not match the record's commitment"},
		{"created changed", func(j *recordJSON) { j.Created = "2001-01-01T00:00:00Z" }, "combine", "does not authenticate the record"},
		{"mac changed", func(j *recordJSON) { j.MAC = strings.Repeat("00", 32) }, "combine", "does not authenticate the record"},
		{"forged share", forged, "combine", "does not authenticate the record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tamper(t, orig, tc.change)
			holder := "x25519-a"
			if tc.at == "decrypt-rsa" {
				holder = "rsa3072"
			}
			s, err := r.Decrypt(testPrivateKey(t, holder))
			if strings.HasPrefix(tc.at, "decrypt") {
				require.ErrorIs(t, err, ErrTampered)
				assert.Contains(t, err.Error(), tc.want)
				return
			}
			require.NoError(t, err)
			_, err = Combine(r, append(decrypt(t, r, "p256-sec1"), s))
			require.ErrorIs(t, err, ErrTampered)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestSharesOfAnotherRecordRefused(t *testing.T) {
	key := randomKey(t)
	old := sealTo(t, key, holders[:3], 2)
	cur := sealTo(t, key, holders[:3], 2)
	mixed := append(decrypt(t, old, "rsa3072"), decrypt(t, cur, "x25519-a")...)
	_, err := Combine(cur, mixed)
	require.ErrorIs(t, err, ErrOtherRecord)
	assert.Contains(t, err.Error(), "belongs to record "+old.ID().String()+", and the store holds record "+cur.ID().String())
}

func TestSealedForAndCheckKeys(t *testing.T) {
	key := randomKey(t)
	a, b, c := testPublicKey(t, "rsa3072"), testPublicKey(t, "x25519-a"), testPublicKey(t, "p256-sec1")
	r := roundTrip(t, sealTo(t, key, holders[:3], 2))
	assert.True(t, r.SealedFor([]*PublicKey{c, a, b}, 2), "order does not matter")
	assert.False(t, r.SealedFor([]*PublicKey{a, b, c}, 3), "another threshold")
	assert.False(t, r.SealedFor([]*PublicKey{a, b}, 2), "a key less")
	assert.False(t, r.SealedFor([]*PublicKey{a, b, testPublicKey(t, "rsa4096")}, 2), "another key")

	for _, tc := range []struct {
		name      string
		keys      []*PublicKey
		threshold int
		want      string
	}{
		{"no keys", nil, 1, "no recovery keys"},
		{"threshold above n", []*PublicKey{a, b}, 3, "threshold 3: want 1 to 2"},
		{"negative threshold", []*PublicKey{a}, -1, "threshold -1"},
		{"twice", []*PublicKey{a, b, a}, 2, "is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Seal(key, tc.keys, tc.threshold)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRecordHoldsNoSecret(t *testing.T) {
	key := randomKey(t)
	r := sealTo(t, key, []string{"x25519-a"}, 1)
	raw := string(r.Marshal())
	for _, enc := range []string{fmt.Sprintf("%x", key[:]), base64.StdEncoding.EncodeToString(key[:])} {
		assert.NotContains(t, raw, enc)
	}
	s := decrypt(t, r, "x25519-a")[0]
	// With a threshold of 1 the share is the key itself: it must never print.
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		out := fmt.Sprintf(f, s)
		assert.NotContains(t, out, fmt.Sprintf("%x", key[:8]), f)
		assert.Contains(t, out, "share 1 of record", f)
	}
}

func TestParseRecordRefuses(t *testing.T) {
	good := sealTo(t, randomKey(t), holders[:2], 2).Marshal()
	var j map[string]any
	require.NoError(t, json.Unmarshal(good, &j))
	with := func(f func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(good, &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	share := func(m map[string]any, i int) map[string]any { return m["shares"].([]any)[i].(map[string]any) }
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "record: EOF"},
		{"not JSON", []byte("hello"), "invalid character"},
		{"trailing data", append(append([]byte{}, good...), []byte("{}")...), "data after the JSON object"},
		{"unknown field", with(func(m map[string]any) { m["extra"] = 1 }), `unknown field "extra"`},
		{"other format", with(func(m map[string]any) { m["format"] = "attestmesh-recovery-v2" }), `format "attestmesh-recovery-v2", this version reads`},
		{"short id", with(func(m map[string]any) { m["id"] = "abcd" }), "id: want 32 hex characters"},
		{"bad time", with(func(m map[string]any) { m["created"] = "yesterday" }), "want RFC 3339"},
		{"non-canonical time", with(func(m map[string]any) { m["created"] = "2026-01-01T00:00:00.5Z" }), "not in its canonical form"},
		{"no shares", with(func(m map[string]any) { m["shares"] = []any{} }), "0 shares: want 1 to 255"},
		{"threshold zero", with(func(m map[string]any) { m["threshold"] = 0 }), "threshold 0: want 1 to 2"},
		{"threshold above n", with(func(m map[string]any) { m["threshold"] = 3 }), "threshold 3: want 1 to 2"},
		{"index zero", with(func(m map[string]any) { share(m, 0)["index"] = 0 }), "index 0: want 1 to 255"},
		{"index 256", with(func(m map[string]any) { share(m, 0)["index"] = 256 }), "index 256"},
		{"same index", with(func(m map[string]any) { share(m, 1)["index"] = 1 }), "two shares with index 1"},
		{"same key", with(func(m map[string]any) { share(m, 1)["key"] = share(m, 0)["key"] }), "sealed to the same key"},
		{"bad fingerprint", with(func(m map[string]any) { share(m, 0)["key"] = "md5:00" }), "want sha256: and 64 hex characters"},
		{"unknown alg", with(func(m map[string]any) { share(m, 1)["alg"] = "rot13" }), `algorithm "rot13"`},
		{"HPKE ciphertext too short", with(func(m map[string]any) { share(m, 1)["ciphertext"] = "AAAA" }), "ciphertext of 3 bytes: want 80"},
		{"RSA ciphertext too short", with(func(m map[string]any) { share(m, 0)["ciphertext"] = "AAAA" }), "ciphertext of 3 bytes: want 384 to 2048"},
		{"ciphertext not base64", with(func(m map[string]any) { share(m, 1)["ciphertext"] = "!!" }), "ciphertext: not base64"},
		{"bad commitment", with(func(m map[string]any) { share(m, 1)["commitment"] = "zz" }), "commitment: want 64 hex characters"},
		{"bad mac", with(func(m map[string]any) { m["mac"] = strings.Repeat("x", 64) }), "mac: not hex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecord(tc.in)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
