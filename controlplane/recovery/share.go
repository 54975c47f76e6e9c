package recovery

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

// PEM block types of shares.
const (
	pemShare       = "ATTESTMESH RECOVERY SHARE"
	pemSealedShare = "ATTESTMESH SEALED RECOVERY SHARE"
)

// maxShareFile bounds a file of shares.
const maxShareFile = 1 << 20

// Share is one decrypted share of a record: whoever holds the record's threshold of them holds
// the store key. Its String and Format never print the value; MarshalPEM is the one way out.
type Share struct {
	// Record is the record the share belongs to.
	Record RecordID
	// Index is the share's x coordinate (1 to 255), its place in the record.
	Index byte
	// Key is the recovery key the share was sealed to.
	Key   Fingerprint
	value [store.KeySize]byte
}

// String names the share without its value.
func (s *Share) String() string {
	return fmt.Sprintf("share %d of record %s (key %s)", s.Index, s.Record, s.Key)
}

// Format implements fmt.Formatter: every verb prints String, never the value.
func (s *Share) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// Clear overwrites the share's value.
func (s *Share) Clear() { clear(s.value[:]) }

// MarshalPEM encodes the share, value included, as a PEM block:
//
//	-----BEGIN ATTESTMESH RECOVERY SHARE-----
//	Index: 2
//	Key: sha256:...
//	Record: 5f0c...
//
//	(base64 of the 32-byte value)
//	-----END ATTESTMESH RECOVERY SHARE-----
//
// It is a secret: whoever gathers the threshold of them holds the store key.
func (s *Share) MarshalPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemShare, Headers: s.headers(), Bytes: s.value[:]})
}

func (s *Share) headers() map[string]string {
	return map[string]string{"Record": s.Record.String(), "Index": strconv.Itoa(int(s.Index)), "Key": s.Key.String()}
}

// SealTo encrypts the share to the public key of whoever combines the shares, for the way
// there: a PEM block "ATTESTMESH SEALED RECOVERY SHARE" that only the holder of to's private
// key opens, bound to the share's record, index and key.
func (s *Share) SealTo(to *PublicKey) ([]byte, error) {
	ct, err := to.seal(transportContext(s.Record, s.Index, s.Key, to.fp), s.value[:])
	if err != nil {
		return nil, err
	}
	h := s.headers()
	h["To"], h["Alg"] = to.fp.String(), to.alg
	return pem.EncodeToMemory(&pem.Block{Type: pemSealedShare, Headers: h, Bytes: ct}), nil
}

func transportContext(id RecordID, index byte, key, to Fingerprint) []byte {
	b := make([]byte, 0, len(transportLabel)+len(id)+1+2*len(key))
	b = append(b, transportLabel...)
	b = append(b, id[:]...)
	b = append(b, index)
	b = append(b, key[:]...)
	return append(b, to[:]...)
}

// SealedShare is a share sealed to the key of whoever combines the shares (Share.SealTo).
type SealedShare struct {
	Record RecordID
	Index  byte
	// Key is the recovery key the share came from.
	Key Fingerprint
	// To is the key that opens it.
	To         Fingerprint
	alg        string
	ciphertext []byte
}

// String names the sealed share.
func (s *SealedShare) String() string {
	return fmt.Sprintf("share %d of record %s (key %s), sealed to %s", s.Index, s.Record, s.Key, s.To)
}

// Open decrypts the sealed share with the private key it was sealed to.
func (s *SealedShare) Open(k *PrivateKey) (*Share, error) {
	if k.fp != s.To {
		return nil, fmt.Errorf("recovery: %s, not to %s", s, k.fp)
	}
	pt, err := k.open(s.alg, transportContext(s.Record, s.Index, s.Key, s.To), s.ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %w: it was changed on the way", ErrTampered, s, err)
	}
	defer clear(pt)
	if len(pt) != store.KeySize {
		return nil, fmt.Errorf("%w: %s holds %d bytes, want %d", ErrTampered, s, len(pt), store.KeySize)
	}
	out := &Share{Record: s.Record, Index: s.Index, Key: s.Key}
	copy(out.value[:], pt)
	return out, nil
}

// ParseShares parses a file of shares: PEM blocks "ATTESTMESH RECOVERY SHARE" and "ATTESTMESH
// SEALED RECOVERY SHARE", in any number and order (untrusted bytes). Any other PEM block, or a
// file without a share, is an error that never quotes a share's value.
func ParseShares(b []byte) ([]*Share, []*SealedShare, error) {
	if len(b) > maxShareFile {
		return nil, nil, fmt.Errorf("%w: %d bytes is too long for a file of shares", ErrMalformed, len(b))
	}
	var plain []*Share
	var sealed []*SealedShare
	for n := 1; ; n++ {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: PEM block %d (%s): %s", ErrMalformed, n, blk.Type, fmt.Sprintf(format, args...))
		}
		id, index, key, err := parseShareHeaders(blk.Headers)
		switch blk.Type {
		case pemShare:
			if err != nil {
				return nil, nil, bad("%v", err)
			}
			if len(blk.Headers) != 3 {
				return nil, nil, bad("want the headers Record, Index and Key only")
			}
			if len(blk.Bytes) != store.KeySize {
				return nil, nil, bad("%d bytes, want %d", len(blk.Bytes), store.KeySize)
			}
			s := &Share{Record: id, Index: index, Key: key}
			copy(s.value[:], blk.Bytes)
			clear(blk.Bytes)
			plain = append(plain, s)
		case pemSealedShare:
			if err != nil {
				return nil, nil, bad("%v", err)
			}
			if len(blk.Headers) != 5 {
				return nil, nil, bad("want the headers Record, Index, Key, To and Alg only")
			}
			to, err := ParseFingerprint(blk.Headers["To"])
			if err != nil {
				return nil, nil, bad("header To: %v", err)
			}
			alg := blk.Headers["Alg"]
			if err := checkCiphertext(alg, len(blk.Bytes), store.KeySize); err != nil {
				return nil, nil, bad("%v", err)
			}
			sealed = append(sealed, &SealedShare{Record: id, Index: index, Key: key, To: to, alg: alg, ciphertext: blk.Bytes})
		default:
			return nil, nil, fmt.Errorf("%w: PEM block %d is a %q, not a recovery share", ErrMalformed, n, clip(blk.Type))
		}
	}
	if len(plain)+len(sealed) == 0 {
		return nil, nil, fmt.Errorf("%w: no %q or %q PEM block", ErrMalformed, pemShare, pemSealedShare)
	}
	return plain, sealed, nil
}

func parseShareHeaders(h map[string]string) (RecordID, byte, Fingerprint, error) {
	var id RecordID
	if err := decodeHex(id[:], h["Record"]); err != nil {
		return id, 0, Fingerprint{}, fmt.Errorf("header Record: %w", err)
	}
	index, err := strconv.ParseUint(h["Index"], 10, 8)
	if err != nil || index == 0 {
		return id, 0, Fingerprint{}, errors.New("header Index: want 1 to 255")
	}
	key, err := ParseFingerprint(h["Key"])
	if err != nil {
		return id, 0, Fingerprint{}, fmt.Errorf("header Key: %w", err)
	}
	return id, byte(index), key, nil
}
