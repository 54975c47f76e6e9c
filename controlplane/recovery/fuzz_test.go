package recovery

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseRecord feeds the recovery record parser untrusted bytes (the record is read from a
// store that an attacker may have written, or from a file sent to a key holder). Whatever it
// accepts must survive its own encoding unchanged, and decrypting a share from it must fail
// cleanly.
func FuzzParseRecord(f *testing.F) {
	for _, name := range []string{"record-2-of-3.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":"attestmesh-recovery-v1"}`))
	priv, err := ParsePrivateKey(mustRead(f, "x25519-a.pem"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		again, err := ParseRecord(r.Marshal())
		if err != nil {
			t.Fatalf("a parsed record does not parse after Marshal: %v", err)
		}
		if !bytes.Equal(again.Marshal(), r.Marshal()) {
			t.Fatal("Marshal is not stable")
		}
		if !bytes.Equal(again.transcript(), r.transcript()) {
			t.Fatal("the MAC's transcript changed through Marshal")
		}
		_ = r.Describe()
		if s, err := r.Decrypt(priv); err == nil {
			_, _ = Combine(r, []*Share{s})
		}
	})
}

// FuzzParseShares feeds the share file parser untrusted bytes (files passed between key holders).
func FuzzParseShares(f *testing.F) {
	for _, name := range []string{"share-plain.pem", "share-sealed.pem"} {
		f.Add(mustRead(f, name))
	}
	f.Add([]byte("-----BEGIN ATTESTMESH RECOVERY SHARE-----\nIndex: 1\n\nAAAA\n-----END ATTESTMESH RECOVERY SHARE-----\n"))
	priv, err := ParsePrivateKey(mustRead(f, "x25519-b.pem"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, sealed, err := ParseShares(b)
		if err != nil {
			return
		}
		for _, s := range plain {
			if _, _, err := ParseShares(s.MarshalPEM()); err != nil {
				t.Fatalf("a parsed share does not parse after MarshalPEM: %v", err)
			}
		}
		for _, s := range sealed {
			_, _ = s.Open(priv)
		}
	})
}

func mustRead(f *testing.F, name string) []byte {
	f.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return b
}
