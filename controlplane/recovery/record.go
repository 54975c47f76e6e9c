package recovery

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/recovery/shamir"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// Format names the record's format; a record of another format is refused.
const Format = "attestmesh-recovery-v1"

// MaxKeys is the most recovery keys a record holds (the x coordinates of GF(2^8)).
const MaxKeys = shamir.MaxShares

// maxRecord bounds the record ParseRecord accepts.
const maxRecord = 1 << 20

// Labels that domain-separate what is derived and bound.
const (
	macLabel        = "attestmesh recovery record mac v1"
	shareLabel      = "attestmesh recovery share v1\x00"
	commitmentLabel = "attestmesh recovery share commitment v1\x00"
	transportLabel  = "attestmesh recovery share transport v1\x00"
)

var (
	// ErrNotRecoveryKey: the key is none of the record's recovery keys.
	ErrNotRecoveryKey = errors.New("recovery: not a recovery key of this record")
	// ErrTooFewShares: fewer shares than the record's threshold.
	ErrTooFewShares = errors.New("recovery: too few shares")
	// ErrTampered: the record or a share was changed (a share does not decrypt or does not
	// match its commitment, or the reconstructed key does not authenticate the record).
	ErrTampered = errors.New("recovery: record or share changed")
	// ErrOtherRecord: a share belongs to another recovery record.
	ErrOtherRecord = errors.New("recovery: share of another record")
	// ErrMalformed: the record or a share cannot be parsed.
	ErrMalformed = errors.New("recovery: malformed")
)

// RecordID names one sealing of the store key: a random 128-bit value, bound into every share.
type RecordID [16]byte

func (id RecordID) String() string { return hex.EncodeToString(id[:]) }

// Record is the store key split with Shamir's secret sharing (any Threshold of the shares give
// it back), each share sealed to one recovery key. It is kept in the store beside the records,
// readable without the store key. It authenticates itself with a MAC under a key derived from
// the store key (HKDF-SHA-256), which only the reconstructed key can check; each share is
// bound to the record, its index and its key (the OAEP label or HPKE info), and committed to
// (SHA-256), so that a changed share is found before reconstruction.
//
// Its JSON form (Marshal, ParseRecord):
//
//	{"format": "attestmesh-recovery-v1", "id": HEX16, "created": RFC3339, "threshold": K,
//	 "shares": [{"index": 1..255, "key": "sha256:HEX", "alg": ALG, "commitment": HEX32,
//	             "ciphertext": BASE64}, ...],
//	 "mac": HEX32}
type Record struct {
	id        RecordID
	created   time.Time
	threshold int
	entries   []entry
	mac       [sha256.Size]byte
}

type entry struct {
	index      byte
	key        Fingerprint
	alg        string
	commitment [sha256.Size]byte
	ciphertext []byte
}

// ID names the sealing.
func (r *Record) ID() RecordID { return r.id }

// Created is when the record was sealed.
func (r *Record) Created() time.Time { return r.created }

// Threshold is how many shares reconstruct the key.
func (r *Record) Threshold() int { return r.threshold }

// Keys are the recovery keys' fingerprints, in share order.
func (r *Record) Keys() []Fingerprint {
	out := make([]Fingerprint, len(r.entries))
	for i, e := range r.entries {
		out[i] = e.key
	}
	return out
}

// Describe says what the record expects: "2 of 3 shares, from the keys sha256:... (share 1), ...".
func (r *Record) Describe() string {
	keys := make([]string, len(r.entries))
	for i, e := range r.entries {
		keys[i] = fmt.Sprintf("%s (share %d)", e.key, e.index)
	}
	return fmt.Sprintf("%d of %d shares, from the keys %s", r.threshold, len(r.entries), strings.Join(keys, ", "))
}

// SealedFor reports whether the record is sealed to exactly keys (in any order) with threshold.
func (r *Record) SealedFor(keys []*PublicKey, threshold int) bool {
	if r.threshold != threshold || len(r.entries) != len(keys) {
		return false
	}
	for _, k := range keys {
		if r.entryFor(k.fp) == nil {
			return false
		}
	}
	return true
}

func (r *Record) entryFor(fp Fingerprint) *entry {
	for i := range r.entries {
		if r.entries[i].key == fp {
			return &r.entries[i]
		}
	}
	return nil
}

// Seal splits key into one share per recovery key, threshold of which reconstruct it, and seals
// each share to its key. threshold 0 means 1.
func Seal(key store.Key, keys []*PublicKey, threshold int) (*Record, error) {
	if threshold == 0 {
		threshold = 1
	}
	if err := CheckKeys(keys, threshold); err != nil {
		return nil, err
	}
	r := &Record{created: time.Now().UTC().Truncate(time.Second), threshold: threshold}
	if _, err := rand.Read(r.id[:]); err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	shares, err := shamir.Split(key[:], len(keys), threshold, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	defer func() {
		for _, s := range shares {
			clear(s.Y)
		}
	}()
	for i, k := range keys {
		e := entry{index: shares[i].X, key: k.fp, alg: k.alg}
		var v [store.KeySize]byte
		copy(v[:], shares[i].Y)
		e.commitment = commitment(r.id, e.index, &v)
		e.ciphertext, err = k.seal(r.shareContext(e.index, e.key), v[:])
		clear(v[:])
		if err != nil {
			return nil, err
		}
		r.entries = append(r.entries, e)
	}
	r.mac = r.computeMAC(key)
	return r, nil
}

// CheckKeys checks a set of recovery keys and a threshold before they are used: 1 to MaxKeys
// keys, each once, and 1 <= threshold <= len(keys).
func CheckKeys(keys []*PublicKey, threshold int) error {
	switch {
	case len(keys) == 0:
		return errors.New("recovery: no recovery keys")
	case len(keys) > MaxKeys:
		return fmt.Errorf("recovery: %d recovery keys: at most %d", len(keys), MaxKeys)
	case threshold < 1 || threshold > len(keys):
		return fmt.Errorf("recovery: threshold %d: want 1 to %d (the number of recovery keys)", threshold, len(keys))
	}
	for i, k := range keys {
		for _, o := range keys[:i] {
			if o.fp == k.fp {
				return fmt.Errorf("recovery: the key %s is given twice", k.fp)
			}
		}
	}
	return nil
}

// Authenticate checks the record's MAC with key: nil when key sealed this record.
func (r *Record) Authenticate(key store.Key) error {
	want := r.computeMAC(key)
	if !hmac.Equal(want[:], r.mac[:]) {
		return fmt.Errorf("%w: the record %s does not authenticate under this store key", ErrTampered, r.id)
	}
	return nil
}

func (r *Record) computeMAC(key store.Key) [sha256.Size]byte {
	mk, err := hkdf.Key(sha256.New, key[:], nil, macLabel, sha256.Size)
	if err != nil {
		panic("recovery: hkdf: " + err.Error()) // only for lengths beyond 255*32
	}
	defer clear(mk)
	m := hmac.New(sha256.New, mk)
	m.Write(r.transcript())
	var out [sha256.Size]byte
	copy(out[:], m.Sum(nil))
	return out
}

// transcript is the unambiguous encoding of everything the MAC covers: every field but the MAC.
func (r *Record) transcript() []byte {
	var b []byte
	lp := func(v []byte) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	lp([]byte(Format))
	lp(r.id[:])
	lp([]byte(r.created.Format(time.RFC3339)))
	// Seal and ParseRecord keep 1 <= threshold <= len(entries) <= MaxKeys (255).
	b = binary.BigEndian.AppendUint16(b, uint16(r.threshold))    //nolint:gosec // G115: at most 255, see above
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.entries))) //nolint:gosec // G115: at most 255, see above
	for _, e := range r.entries {
		b = append(b, e.index)
		lp(e.key[:])
		lp([]byte(e.alg))
		lp(e.commitment[:])
		lp(e.ciphertext)
	}
	return b
}

// shareContext binds a share's ciphertext to the record, its index and its key.
func (r *Record) shareContext(index byte, key Fingerprint) []byte {
	b := make([]byte, 0, len(shareLabel)+len(r.id)+2+len(key))
	b = append(b, shareLabel...)
	b = append(b, r.id[:]...)
	b = append(b, byte(r.threshold), index) //nolint:gosec // G115: Seal and ParseRecord keep the threshold within 1 to 255
	return append(b, key[:]...)
}

func commitment(id RecordID, index byte, v *[store.KeySize]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(commitmentLabel))
	h.Write(id[:])
	h.Write([]byte{index})
	h.Write(v[:])
	var out [sha256.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// Decrypt opens the share sealed to k: ErrNotRecoveryKey when k is none of the record's keys,
// ErrTampered when the share does not decrypt or does not match its commitment.
func (r *Record) Decrypt(k *PrivateKey) (*Share, error) {
	e := r.entryFor(k.fp)
	if e == nil {
		return nil, fmt.Errorf("%w: the key %s is not one of the keys of record %s, which expects %s",
			ErrNotRecoveryKey, k.fp, r.id, r.Describe())
	}
	pt, err := k.open(e.alg, r.shareContext(e.index, e.key), e.ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: share %d of record %s, sealed to %s, %w: its ciphertext was changed", ErrTampered, e.index, r.id, e.key, err)
	}
	defer clear(pt)
	if len(pt) != store.KeySize {
		return nil, fmt.Errorf("%w: share %d of record %s holds %d bytes, want %d", ErrTampered, e.index, r.id, len(pt), store.KeySize)
	}
	s := &Share{Record: r.id, Index: e.index, Key: e.key}
	copy(s.value[:], pt)
	if err := r.check(s); err != nil {
		s.Clear()
		return nil, err
	}
	return s, nil
}

// check checks that s is a share of r: its record, index, key and commitment.
func (r *Record) check(s *Share) error {
	if s.Record != r.id {
		return fmt.Errorf("%w: share %d (key %s) belongs to record %s, and the store holds record %s: "+
			"decrypt the shares again from the record the store holds now (attestmesh recover record)", ErrOtherRecord, s.Index, s.Key, s.Record, r.id)
	}
	e := r.entryFor(s.Key)
	if e == nil || e.index != s.Index {
		return fmt.Errorf("%w: share %d names the key %s, which the record %s does not hold as share %d; it expects %s",
			ErrTampered, s.Index, s.Key, r.id, s.Index, r.Describe())
	}
	c := commitment(r.id, s.Index, &s.value)
	if !hmac.Equal(c[:], e.commitment[:]) {
		return fmt.Errorf("%w: share %d (key %s) does not match the record's commitment: the share or the record was changed", ErrTampered, s.Index, s.Key)
	}
	return nil
}

// Combine reconstructs the store key from shares of r (duplicates are counted once) and checks
// it against the record's MAC. The caller checks the key against the store itself.
func Combine(r *Record, shares []*Share) (store.Key, error) {
	var have []*Share
	for _, s := range shares {
		if err := r.check(s); err != nil {
			return store.Key{}, err
		}
		if !slices.ContainsFunc(have, func(o *Share) bool { return o.Index == s.Index }) {
			have = append(have, s)
		}
	}
	if len(have) < r.threshold {
		return store.Key{}, fmt.Errorf("%w: %s; %s", ErrTooFewShares, r.shareCount(have), r.missing(have))
	}
	points := make([]shamir.Share, len(have))
	for i, s := range have {
		points[i] = shamir.Share{X: s.Index, Y: s.value[:]}
	}
	secret, err := shamir.Combine(points)
	if err != nil {
		return store.Key{}, fmt.Errorf("recovery: %w", err)
	}
	defer clear(secret)
	var key store.Key
	copy(key[:], secret)
	if err := r.Authenticate(key); err != nil {
		return store.Key{}, fmt.Errorf("%w: the %d shares reconstruct a key that does not authenticate the record %s: the record was changed",
			ErrTampered, len(have), r.id)
	}
	return key, nil
}

func (r *Record) shareCount(have []*Share) string {
	got := make([]string, len(have))
	for i, s := range have {
		got[i] = fmt.Sprintf("share %d (%s)", s.Index, s.Key)
	}
	if len(have) == 0 {
		return fmt.Sprintf("the record %s needs %d of its %d shares, and none was given", r.id, r.threshold, len(r.entries))
	}
	verb := "were"
	if len(have) == 1 {
		verb = "was"
	}
	return fmt.Sprintf("the record %s needs %d of its %d shares, and %d %s given: %s", r.id, r.threshold, len(r.entries),
		len(have), verb, strings.Join(got, ", "))
}

func (r *Record) missing(have []*Share) string {
	var rest []string
	for _, e := range r.entries {
		if !slices.ContainsFunc(have, func(s *Share) bool { return s.Index == e.index }) {
			rest = append(rest, fmt.Sprintf("%s (share %d)", e.key, e.index))
		}
	}
	return fmt.Sprintf("%d more from the keys %s", r.threshold-len(have), strings.Join(rest, ", "))
}

type recordJSON struct {
	Format    string      `json:"format"`
	ID        string      `json:"id"`
	Created   string      `json:"created"`
	Threshold int         `json:"threshold"`
	Shares    []entryJSON `json:"shares"`
	MAC       string      `json:"mac"`
}

type entryJSON struct {
	Index      int    `json:"index"`
	Key        string `json:"key"`
	Alg        string `json:"alg"`
	Commitment string `json:"commitment"`
	Ciphertext string `json:"ciphertext"`
}

// Marshal encodes the record as indented JSON, ending in a newline.
func (r *Record) Marshal() []byte {
	j := recordJSON{
		Format: Format, ID: r.id.String(), Created: r.created.Format(time.RFC3339), Threshold: r.threshold,
		MAC: hex.EncodeToString(r.mac[:]),
	}
	for _, e := range r.entries {
		j.Shares = append(j.Shares, entryJSON{
			Index: int(e.index), Key: e.key.String(), Alg: e.alg,
			Commitment: hex.EncodeToString(e.commitment[:]), Ciphertext: base64.StdEncoding.EncodeToString(e.ciphertext),
		})
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		panic("recovery: marshal record: " + err.Error()) // strings and ints only
	}
	return append(b, '\n')
}

// ParseRecord parses and checks the JSON form of a record (untrusted bytes: read from the store
// or from a file a key holder was sent). It checks the structure, not the MAC, which needs the
// store key (Authenticate).
func ParseRecord(b []byte) (*Record, error) {
	if len(b) > maxRecord {
		return nil, fmt.Errorf("%w: record of %d bytes: at most %d", ErrMalformed, len(b), maxRecord)
	}
	var j recordJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: record: %w", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: record: data after the JSON object", ErrMalformed)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: record: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if j.Format != Format {
		return nil, bad("format %q, this version reads %q", clip(j.Format), Format)
	}
	r := &Record{threshold: j.Threshold}
	if err := decodeHex(r.id[:], j.ID); err != nil {
		return nil, bad("id: %v", err)
	}
	t, err := time.Parse(time.RFC3339, j.Created)
	if err != nil {
		return nil, bad("created %q: want RFC 3339", clip(j.Created))
	}
	// The MAC covers the time as written: keep only what RFC 3339 round-trips.
	if t.Format(time.RFC3339) != j.Created {
		return nil, bad("created %q: not in its canonical form (%s)", clip(j.Created), t.Format(time.RFC3339))
	}
	r.created = t
	if n := len(j.Shares); n == 0 || n > MaxKeys {
		return nil, bad("%d shares: want 1 to %d", n, MaxKeys)
	}
	if j.Threshold < 1 || j.Threshold > len(j.Shares) {
		return nil, bad("threshold %d: want 1 to %d (the number of shares)", j.Threshold, len(j.Shares))
	}
	for i, s := range j.Shares {
		e := entry{alg: s.Alg}
		if s.Index < 1 || s.Index > MaxKeys {
			return nil, bad("share %d: index %d: want 1 to %d", i, s.Index, MaxKeys)
		}
		e.index = byte(s.Index)
		if e.key, err = ParseFingerprint(s.Key); err != nil {
			return nil, bad("share %d: %v", e.index, err)
		}
		if err := decodeHex(e.commitment[:], s.Commitment); err != nil {
			return nil, bad("share %d: commitment: %v", e.index, err)
		}
		if e.ciphertext, err = base64.StdEncoding.Strict().DecodeString(s.Ciphertext); err != nil {
			return nil, bad("share %d: ciphertext: not base64", e.index)
		}
		if err := checkCiphertext(e.alg, len(e.ciphertext), store.KeySize); err != nil {
			return nil, bad("share %d: %v", e.index, err)
		}
		for _, o := range r.entries {
			if o.index == e.index {
				return nil, bad("two shares with index %d", e.index)
			}
			if o.key == e.key {
				return nil, bad("shares %d and %d are sealed to the same key %s", o.index, e.index, e.key)
			}
		}
		r.entries = append(r.entries, e)
	}
	if err := decodeHex(r.mac[:], j.MAC); err != nil {
		return nil, bad("mac: %v", err)
	}
	return r, nil
}

// checkCiphertext checks the length of a ciphertext of n plaintext bytes under alg.
func checkCiphertext(alg string, size, n int) error {
	const gcmTag = 16
	switch alg {
	case AlgRSAOAEP:
		if size < MinRSABits/8 || size > maxRSABits/8 {
			return fmt.Errorf("%s ciphertext of %d bytes: want %d to %d", alg, size, MinRSABits/8, maxRSABits/8)
		}
	case AlgHPKEX25519, AlgHPKEP256:
		enc := map[string]int{AlgHPKEX25519: 32, AlgHPKEP256: 65}[alg]
		if want := enc + n + gcmTag; size != want {
			return fmt.Errorf("%s ciphertext of %d bytes: want %d", alg, size, want)
		}
	default:
		return fmt.Errorf("algorithm %q: this version knows %s, %s and %s", clip(alg), AlgRSAOAEP, AlgHPKEX25519, AlgHPKEP256)
	}
	return nil
}

func decodeHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("want %d hex characters, got %d", 2*len(dst), len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return errors.New("not hex")
	}
	return nil
}
