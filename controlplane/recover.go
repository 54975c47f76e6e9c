package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/recovery"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// What `attestmesh recover` and its subcommands do, when the store key is lost: export the
// recovery record for the key holders (RecoveryRecord), decrypt one holder's share
// (RecoveryShare), and reconstruct the store key from a threshold of keys and shares, check it
// against the store and write it out (Recover). None of them writes to the store.

// maxShareFile bounds a file of shares; maxRecordFile an exported record.
const (
	maxShareFile  = 1 << 20
	maxRecordFile = 1 << 20
)

// RecoverConfig is what `attestmesh recover` does.
type RecoverConfig struct {
	// StoreSource is the store whose key is lost, opened read-only.
	StoreSource
	// KeyFiles are private keys (PEM): recovery keys, each of which decrypts its share from the
	// record, and keys that shares were sealed to (`recover share --to`). "-" reads standard
	// input (once).
	KeyFiles []string
	// ShareFiles hold shares from `attestmesh recover share`, sealed or not. "-" reads
	// standard input (once).
	ShareFiles []string
	// KeyOut receives the recovered store key: a new file (mode 0600, never overwritten), or
	// "-" for standard output.
	KeyOut string

	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// RecoveryRecordConfig is what `attestmesh recover record` does.
type RecoveryRecordConfig struct {
	// StoreSource is the store, opened read-only.
	StoreSource
	// Out receives the record (it holds no secret): a new file, or "-" for standard output.
	Out string

	Stdout, Stderr io.Writer
}

// RecoveryShareConfig is what `attestmesh recover share` does: one key holder's step.
type RecoveryShareConfig struct {
	// RecordFile is the record from `attestmesh recover record`; or else StoreSource, the
	// store itself, when the holder can reach it. Exactly one.
	RecordFile string
	StoreSource
	// KeyFile is the holder's recovery private key (PEM); "-" reads standard input.
	KeyFile string
	// To, when set, is the public key (PEM) of whoever combines the shares: the share is then
	// sealed to it for the way there.
	To string
	// Out receives the share: a new file (mode 0600), or "-" for standard output.
	Out string

	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Recover reconstructs the store key from the store's recovery record with the given keys and
// shares, checks it against the record's MAC and against the store itself, and writes it to
// cfg.KeyOut.
func Recover(ctx context.Context, cfg RecoverConfig) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	in := &inputs{stdin: cfg.Stdin}
	eng, rec, err := openRecord(ctx, cfg.StoreSource)
	if err != nil {
		return err
	}
	defer eng.Close()

	// Every key is a recovery key of the record, or the key that sealed shares were sealed
	// to, or both; a key that is neither is refused first: it is the likeliest mistake.
	var keys []*recovery.PrivateKey
	keyFile := map[*recovery.PrivateKey]string{}
	for _, f := range cfg.KeyFiles {
		k, err := in.privateKey(f)
		if err != nil {
			return fmt.Errorf("recover: %w", err)
		}
		keyFile[k] = f
		keys = append(keys, k)
	}
	var plain []*recovery.Share
	defer func() { // cleared on every return, also before they join shares
		for _, s := range plain {
			s.Clear()
		}
	}()
	var sealed []*recovery.SealedShare
	shareFile := map[any]string{}
	for _, f := range cfg.ShareFiles {
		b, err := in.read(f, maxShareFile)
		if err != nil {
			return fmt.Errorf("recover: --share %s: %w", f, err)
		}
		p, s, err := recovery.ParseShares(b)
		clear(b)
		if err != nil {
			return fmt.Errorf("recover: --share %s: %w", f, err)
		}
		for _, x := range p {
			shareFile[x] = f
		}
		for _, x := range s {
			shareFile[x] = f
		}
		plain, sealed = append(plain, p...), append(sealed, s...)
	}
	for _, k := range keys {
		sealedTo := slices.ContainsFunc(sealed, func(s *recovery.SealedShare) bool { return s.To == k.Fingerprint() })
		if !sealedTo && !slices.Contains(rec.Keys(), k.Fingerprint()) {
			return fmt.Errorf("recover: --key %s: %w: the key %s is neither one of the record's recovery keys nor the key that a "+
				"given share was sealed to; the record %s expects %s", keyFile[k], recovery.ErrNotRecoveryKey, k.Fingerprint(), rec.ID(), rec.Describe())
		}
	}

	var shares []*recovery.Share
	defer func() {
		for _, s := range shares {
			s.Clear()
		}
	}()
	from := map[byte]string{} // share index -> where it came from, for the summary
	for _, k := range keys {
		if slices.Contains(rec.Keys(), k.Fingerprint()) {
			s, err := rec.Decrypt(k)
			if err != nil {
				return fmt.Errorf("recover: --key %s: %w", keyFile[k], err)
			}
			shares = append(shares, s)
			from[s.Index] = "--key " + keyFile[k]
		}
	}
	for _, s := range plain {
		shares = append(shares, s)
		from[s.Index] = "--share " + shareFile[s]
	}
	for _, s := range sealed {
		i := slices.IndexFunc(keys, func(k *recovery.PrivateKey) bool { return k.Fingerprint() == s.To })
		if i < 0 {
			return fmt.Errorf("recover: --share %s: %s: give its private key with --key", shareFile[s], s)
		}
		o, err := s.Open(keys[i])
		if err != nil {
			return fmt.Errorf("recover: --share %s: %w", shareFile[s], err)
		}
		shares = append(shares, o)
		from[o.Index] = fmt.Sprintf("--share %s (sealed to --key %s)", shareFile[s], keyFile[keys[i]])
	}

	key, err := recovery.Combine(rec, shares)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer clear(key[:])
	status, verr := store.Verify(ctx, eng, key)
	switch {
	case errors.Is(verr, store.ErrWrongKey):
		return fmt.Errorf("recover: the shares reconstruct the key that sealed the recovery record %s, but it does not open the store "+
			"%s: the record was copied in from another store", rec.ID(), cfg.StoreSource)
	case verr != nil && !errors.Is(verr, store.ErrCorrupt):
		return fmt.Errorf("recover: %w", verr)
	}

	msg := cfg.Stdout
	if cfg.KeyOut == "-" {
		msg = cfg.Stderr
	}
	fmt.Fprintf(msg, "recovery record %s (sealed %s): %d of %d shares needed\n", rec.ID(), rec.Created().Format(time.RFC3339),
		rec.Threshold(), len(rec.Keys()))
	for _, s := range dedupe(shares) {
		fmt.Fprintf(msg, "  share %d  %s  from %s\n", s.Index, s.Key, from[s.Index])
	}
	if verr != nil {
		fmt.Fprintf(msg, "store key reconstructed: it opens the store %s, but %v\n"+
			"the control plane will refuse this store until that is resolved (docs/operations.md, \"Rollback\")\n", cfg.StoreSource, verr)
	} else {
		fmt.Fprintf(msg, "store key reconstructed: it authenticates the record and opens the store %s "+
			"(generation %d, %d records, all matching its sealed state)\n", cfg.StoreSource, status.Generation, status.Records)
	}
	keyHex := store.AppendHexKey(nil, key)
	defer clear(keyHex)
	if err := writeOutput(cfg.KeyOut, keyHex, 0o600, cfg.Stdout, true); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if cfg.KeyOut != "-" {
		fmt.Fprintf(msg, "store key written to %s (mode 0600)\n", cfg.KeyOut)
	}
	if verr == nil {
		fmt.Fprintf(msg, "next: start the control plane with this key (--store-key-file, or the Kubernetes Secret); if the store's "+
			"rollback anchor was lost with the key, add --allow-store-rollback once (the store is at generation %d)\n", status.Generation)
	}
	return nil
}

func (cfg *RecoverConfig) validate() error {
	var problems []string
	if err := cfg.check(); err != nil {
		problems = append(problems, err.Error())
	}
	if cfg.KeyOut == "" {
		problems = append(problems, "--key-out is required: a new file for the store key (mode 0600), or - to print it")
	}
	if len(cfg.KeyFiles)+len(cfg.ShareFiles) == 0 {
		problems = append(problems, "give the recovery private keys (--key) or the holders' shares (--share), as many as the record's threshold")
	}
	if n := countDash(cfg.KeyFiles) + countDash(cfg.ShareFiles); n > 1 {
		problems = append(problems, "standard input (-) can be read once only")
	}
	if cfg.KeyOut != "" && cfg.KeyOut != "-" {
		if cfg.Store == "" && cfg.DataDir != "" && within(cfg.KeyOut, cfg.DataDir) {
			problems = append(problems, fmt.Sprintf("--key-out %s is inside --data-dir %s: the key must not be stored next to the data it protects", cfg.KeyOut, cfg.DataDir))
		}
		if _, err := os.Lstat(cfg.KeyOut); err == nil {
			problems = append(problems, fmt.Sprintf("--key-out %s exists: refusing to overwrite it (choose a new file)", cfg.KeyOut))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("recover: %s", strings.Join(problems, "; "))
	}
	return nil
}

// RecoveryRecord writes the store's recovery record out, for the key holders.
func RecoveryRecord(ctx context.Context, cfg RecoveryRecordConfig) error {
	if err := cfg.check(); err != nil {
		return fmt.Errorf("recover record: %w", err)
	}
	eng, rec, err := openRecord(ctx, cfg.StoreSource)
	if err != nil {
		return err
	}
	defer eng.Close()
	if err := writeOutput(cfg.Out, rec.Marshal(), 0o644, cfg.Stdout, false); err != nil {
		return fmt.Errorf("recover record: %w", err)
	}
	msg := cfg.Stdout
	if cfg.Out == "-" || cfg.Out == "" {
		msg = cfg.Stderr
	}
	fmt.Fprintf(msg, "recovery record %s (sealed %s): %s\n", rec.ID(), rec.Created().Format(time.RFC3339), rec.Describe())
	fmt.Fprintf(msg, "it holds no secret: send it to the key holders; each runs\n"+
		"  attestmesh recover share --record RECORD --key THEIR-KEY.pem --to COMBINER.pub.pem --out share.pem\n")
	return nil
}

// RecoveryShare decrypts one holder's share from the record and writes it, sealed to the
// combiner's key when cfg.To says so.
func RecoveryShare(ctx context.Context, cfg RecoveryShareConfig) error {
	switch {
	case cfg.KeyFile == "":
		return errors.New("recover share: --key is required: your recovery private key (PEM), or - to read it from standard input")
	case (cfg.RecordFile == "") == (cfg.DataDir == "" && cfg.Store == ""):
		return errors.New("recover share: give either --record FILE (from attestmesh recover record) or --data-dir DIR or --store etcd://... (the store itself)")
	case cfg.Out != "" && cfg.Out != "-" && fileExists(cfg.Out):
		return fmt.Errorf("recover share: --out %s exists: refusing to overwrite it", cfg.Out)
	}
	in := &inputs{stdin: cfg.Stdin}
	var rec *recovery.Record
	if cfg.RecordFile != "" {
		b, err := in.read(cfg.RecordFile, maxRecordFile)
		if err != nil {
			return fmt.Errorf("recover share: --record %s: %w", cfg.RecordFile, err)
		}
		if rec, err = recovery.ParseRecord(b); err != nil {
			return fmt.Errorf("recover share: --record %s: %w", cfg.RecordFile, err)
		}
	} else {
		eng, r, err := openRecord(ctx, cfg.StoreSource)
		if err != nil {
			return err
		}
		_ = eng.Close()
		rec = r
	}
	var to *recovery.PublicKey
	if cfg.To != "" {
		b, err := readLimited(cfg.To, maxKeyFile)
		if err != nil {
			return fmt.Errorf("recover share: --to %s: %w", cfg.To, err)
		}
		if to, err = recovery.ParsePublicKey(b); err != nil {
			return fmt.Errorf("recover share: --to %s: %w", cfg.To, err)
		}
	}
	k, err := in.privateKey(cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("recover share: %w", err)
	}
	s, err := rec.Decrypt(k)
	if err != nil {
		return fmt.Errorf("recover share: --key %s: %w", cfg.KeyFile, err)
	}
	defer s.Clear()
	var out []byte
	if to != nil {
		if out, err = s.SealTo(to); err != nil {
			return fmt.Errorf("recover share: %w", err)
		}
	} else {
		out = s.MarshalPEM()
		defer clear(out)
	}
	if err := writeOutput(cfg.Out, out, 0o600, cfg.Stdout, true); err != nil {
		return fmt.Errorf("recover share: %w", err)
	}
	fmt.Fprintf(cfg.Stderr, "share %d of recovery record %s (%d of %d shares needed) decrypted with the key %s\n",
		s.Index, rec.ID(), rec.Threshold(), len(rec.Keys()), k.Fingerprint())
	if to != nil {
		fmt.Fprintf(cfg.Stderr, "sealed to %s: only its private key opens it; send it to whoever combines the shares\n", to.Fingerprint())
	} else {
		fmt.Fprintf(cfg.Stderr, "the share is NOT sealed: with %d of them anyone holds the store key; hand it over only on a channel you trust, "+
			"or seal it with --to COMBINER.pub.pem\n", rec.Threshold())
	}
	return nil
}

// StoreSource is where `attestmesh recover` finds a store: the embedded file under DataDir,
// or, when Store is set, etcd (etcd://host:port,...) with the client certificate files.
type StoreSource struct {
	DataDir                               string
	Store                                 string
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
}

// String names the store in messages: "under --data-dir D" or "in etcd://...".
func (s StoreSource) String() string {
	if s.Store != "" {
		return "in " + s.Store
	}
	return "under --data-dir " + s.DataDir
}

func (s StoreSource) check() error {
	if s.Store == "" && s.DataDir == "" {
		return errors.New("--data-dir (the embedded store) or --store etcd://... is required")
	}
	if s.Store != "" {
		if _, err := etcdConfig(Config{Store: s.Store, EtcdCAFile: s.EtcdCAFile, EtcdCertFile: s.EtcdCertFile, EtcdKeyFile: s.EtcdKeyFile}); err != nil {
			return err
		}
	}
	return nil
}

// open opens the engine without writing to it: bbolt read-only; etcd, of which recover only
// reads.
func (s StoreSource) open(ctx context.Context) (store.Engine, error) {
	if s.Store == "" {
		return openEngine(s.DataDir, true)
	}
	ecfg, err := etcdConfig(Config{Store: s.Store, EtcdCAFile: s.EtcdCAFile, EtcdCertFile: s.EtcdCertFile, EtcdKeyFile: s.EtcdKeyFile})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	e, err := store.OpenEtcd(ctx, ecfg)
	if err != nil {
		return nil, fmt.Errorf("controlplane: --store %s: %w", s.Store, err)
	}
	return e, nil
}

// openRecord opens the store read-only and parses its recovery record. The caller closes the
// engine.
func openRecord(ctx context.Context, src StoreSource) (store.Engine, *recovery.Record, error) {
	eng, err := src.open(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("recover: %w", err)
	}
	raw, err := store.ReadRecoveryRecord(ctx, eng)
	if err != nil {
		_ = eng.Close()
		return nil, nil, fmt.Errorf("recover: %w", err)
	}
	if raw == nil {
		_ = eng.Close()
		return nil, nil, fmt.Errorf("recover: the store %s holds no recovery record: its control plane never ran "+
			"with --recovery-key, and without the store key its data cannot be read", src)
	}
	rec, err := recovery.ParseRecord(raw)
	if err != nil {
		_ = eng.Close()
		return nil, nil, fmt.Errorf("recover: the store's recovery record: %w", err)
	}
	return eng, rec, nil
}

// inputs reads files, and standard input for "-" once.
type inputs struct {
	stdin    io.Reader
	usedOnce bool
}

func (in *inputs) read(path string, limit int64) ([]byte, error) {
	if path != "-" {
		return readLimited(path, limit)
	}
	if in.usedOnce {
		return nil, errors.New("standard input (-) can be read once only")
	}
	in.usedOnce = true
	if in.stdin == nil {
		return nil, errors.New("no standard input")
	}
	return readAllLimited(in.stdin, limit)
}

// privateKey reads and parses a private key; the caller's error names the flag.
func (in *inputs) privateKey(path string) (*recovery.PrivateKey, error) {
	b, err := in.read(path, maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", path, err)
	}
	defer clear(b)
	k, err := recovery.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", path, err)
	}
	return k, nil
}

// writeOutput writes data to a new file at path with mode (never replacing one), or to stdout
// for "-" (and, unless secret, for "").
func writeOutput(path string, data []byte, mode os.FileMode, stdout io.Writer, secret bool) error {
	if path == "-" || (path == "" && !secret) {
		_, err := stdout.Write(data)
		return err
	}
	if path == "" {
		return errors.New("no output given")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists: refusing to overwrite it", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	return f.Close()
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func countDash(paths []string) int {
	n := 0
	for _, p := range paths {
		if p == "-" {
			n++
		}
	}
	return n
}

func dedupe(shares []*recovery.Share) []*recovery.Share {
	var out []*recovery.Share
	seen := map[byte]bool{}
	for _, s := range shares {
		if !seen[s.Index] {
			seen[s.Index] = true
			out = append(out, s)
		}
	}
	return out
}
