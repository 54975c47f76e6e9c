// Package session implements the attestmesh session language: the subset of the SCONE CAS
// session language v0.3 that docs/sessions.md describes. It parses session documents (YAML) with the
// line of every field, validates them (all problems at once), checks imports against exports
// across sessions, enforces the create and update rules, expands template variables, and
// renders a service's configuration (argv, environment, injected files) from secret values.
//
// A session is untrusted input: Parse accepts at most MaxDocumentSize bytes, refuses YAML
// anchors and aliases, unknown keys and wrong types, and never panics (it is fuzzed).
//
// Rendering never puts secret values into errors.
package session

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Version is the only session language version accepted.
const Version = "0.3"

// Access policy entries besides PEM certificates.
const (
	// PolicyCreator allows the client certificate that created the session.
	PolicyCreator = "CREATOR"
	// PolicyAny allows any authenticated client.
	PolicyAny = "ANY"
	// PolicyNone allows nobody; it must be the only entry.
	PolicyNone = "NONE"
)

// Session is one parsed session document. Parse fills defaults (access policy CREATOR,
// attestation mode hardware) and lowercases hex measurements; Validate checks the rest.
type Session struct {
	Name         string // may contain '/', each segment a SPIFFE path segment
	Version      string // must be "0.3"
	Predecessor  string // hex SHA-256 (Hash) of the session this one replaces; update only
	AccessPolicy AccessPolicy
	Services     []Service
	Images       []Image
	Secrets      []Secret
	Security     Security

	// lines maps a field path ("secrets[3].issuer") to its line in the document.
	lines map[string]int
	// docHash is Hash of the document Parse read; "" for sessions built in code.
	docHash string
}

// DocHash returns the Hash of the document that Parse read this session from: what an
// export's session_hash pins. It is "" for a session that was not parsed.
func (s *Session) DocHash() string { return s.docHash }

// AccessPolicy decides who may read and who may update a session, and who may create sessions
// in its namespace: a session named "a/b" can be created only by a client that session "a"'s
// CreateSessions allows (as SCONE's namespaces). Each entry is PolicyCreator, PolicyAny,
// PolicyNone or a PEM-encoded client certificate. Parse fills CREATOR for every list left out.
type AccessPolicy struct {
	Read           []string
	Update         []string
	CreateSessions []string // YAML key create_sessions
}

// Service is one workload of a session, identified as spiffe://<td>/<session>/<service>.
// Exactly one of MREnclaves and Attestation is given.
type Service struct {
	Name        string
	ImageName   string               // names an Image whose files are injected; optional
	MREnclaves  []string             // accepted MRENCLAVEs, 64 lowercase hex characters each
	Attestation []AttestationVariant // accepted variants; a quote must match one of them
	// Command is split into argv like a POSIX shell would split words, without any
	// expansion: blanks separate words; '...' keeps everything literally; "..." keeps
	// everything except that \" and \\ stand for " and \; outside quotes \ escapes the
	// next character. Placeholders expand inside each word after splitting.
	Command     string
	Environment map[string]string
	Pwd         string // absolute working directory
	FSPFPath    string // absolute path of the protected file system's metadata
	FSPFKey     string // 64 hex characters (256-bit key)
	FSPFTag     string // hex
	// Sidecar says which sidecar enclaves may carry this service's identity. Nil means the
	// control plane's default: in simulation mode its own build's measurement; in hardware
	// mode no sidecar at all.
	Sidecar *SidecarPolicy
}

// SidecarPolicy lists the measurements of the sidecar enclaves that a service accepts (YAML
// key "sidecar" of a service). A sidecar receives the service's SVID only when its quote
// shows one of them and it presents a grant from an attested app of the service.
type SidecarPolicy struct {
	MREnclaves []string // 64 lowercase hex characters each
}

// AttestationVariant is one accepted enclave identity. A quote matches the variant when it
// matches every constraint the variant gives (MREnclaves and Signer).
type AttestationVariant struct {
	MREnclaves []string // YAML key "mrenclave"; the enclave's MRENCLAVE is one of these
	Signer     *Signer
}

// Signer accepts enclaves by their signer identity.
type Signer struct {
	MRSigner  string // 64 lowercase hex characters
	ISVProdID uint16 // must equal the enclave's ISVPRODID
	ISVSVN    uint16 // the minimum ISVSVN accepted
}

// Image names a set of files injected into the services that use it.
type Image struct {
	Name           string
	InjectionFiles []InjectionFile
}

// InjectionFile is a file that the launcher makes visible to the attested app only.
// Content may hold placeholders.
type InjectionFile struct {
	Path    string // absolute and clean
	Content string
}

// Kind is the kind of a secret.
type Kind string

// Secret kinds.
const (
	KindASCII      Kind = "ascii"
	KindBinary     Kind = "binary"
	KindPrivateKey Kind = "private-key"
	KindX509CA     Kind = "x509-ca"
	KindX509       Kind = "x509"
)

// Kinds lists every secret kind.
var Kinds = []Kind{KindASCII, KindBinary, KindPrivateKey, KindX509CA, KindX509}

// IsCertificate reports whether k is x509 or x509-ca.
func (k Kind) IsCertificate() bool { return k == KindX509 || k == KindX509CA }

// Algorithm is a private key algorithm.
type Algorithm string

// Private key algorithms.
const (
	AlgorithmP256    Algorithm = "P-256"
	AlgorithmP384    Algorithm = "P-384"
	AlgorithmEd25519 Algorithm = "Ed25519"
	AlgorithmRSA2048 Algorithm = "RSA-2048"
	AlgorithmRSA3072 Algorithm = "RSA-3072"
)

// Algorithms lists every private key algorithm; the first is the default.
var Algorithms = []Algorithm{AlgorithmP256, AlgorithmP384, AlgorithmEd25519, AlgorithmRSA2048, AlgorithmRSA3072}

// Defaults for generated secrets.
const (
	DefaultASCIISize    = 20 // characters
	DefaultBinarySize   = 32 // bytes
	DefaultX509Validity = 365 * 24 * time.Hour
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
)

// Secret is a secret that the control plane generates, takes from the document, or imports
// from another session. Fields that do not apply to the Kind must be empty.
type Secret struct {
	Name string // identifier: [A-Za-z_][A-Za-z0-9_]*
	Kind Kind   // may be empty for an import; then the exporter's kind applies

	// ascii and binary.
	Size  int    // generated length: characters for ascii, bytes for binary; 0 = default
	Value string // given value: the text for ascii, standard base64 for binary

	// private-key.
	Algorithm Algorithm // empty = P-256

	// x509 and x509-ca.
	PrivateKey string   // name of a private-key secret; empty = generated implicitly
	Issuer     string   // name of an x509-ca secret; empty = self-signed
	CommonName string   // empty = the secret's name
	DNS        []string // subject alternative DNS names
	ValidFor   string   // "90d", "1y", "720h"; empty = 1 year (x509) or 10 years (x509-ca)

	Export       []Export // sessions this secret is exported to
	ExportPublic bool     // certificates only: the certificate is readable without authentication
	Import       *Import  // the secret comes from another session
}

// Export exports a secret to another session. With SessionHash set, only the importing
// session's document with exactly that hash (Hash) may import it: the export pins the
// importer's policy, so that nobody who can create or update a session of that name can
// take the secret with a policy of their own.
type Export struct {
	Session     string
	SessionHash string // YAML key session_hash; 64 lowercase hex characters, optional
}

// Allows reports whether the export lets session name, whose document has hash docHash,
// import the secret.
func (e Export) Allows(name, docHash string) bool {
	return e.Session == name && (e.SessionHash == "" || strings.EqualFold(e.SessionHash, docHash))
}

// Import takes a secret that another session exports to this one.
type Import struct {
	Session string
	Secret  string
}

// EffectiveSize returns the generation size for ascii and binary secrets, the default when Size is 0.
func (s *Secret) EffectiveSize() int {
	switch {
	case s.Size != 0:
		return s.Size
	case s.Kind == KindBinary:
		return DefaultBinarySize
	default:
		return DefaultASCIISize
	}
}

// EffectiveAlgorithm returns the key algorithm of a private-key secret (P-256 when empty).
func (s *Secret) EffectiveAlgorithm() Algorithm {
	if s.Algorithm == "" {
		return AlgorithmP256
	}
	return s.Algorithm
}

// Validity returns how long a certificate is valid: ValidFor, or the kind's default.
// The error is only possible for a session that did not pass Validate.
func (s *Secret) Validity() (time.Duration, error) {
	if s.ValidFor == "" {
		if s.Kind == KindX509CA {
			return DefaultCAValidity, nil
		}
		return DefaultX509Validity, nil
	}
	return ParseValidFor(s.ValidFor)
}

// maxValidity bounds valid_for: certificates beyond 100 years are a mistake.
const maxValidity = 100 * 365 * 24 * time.Hour

// ParseValidFor parses a certificate lifetime: a positive integer followed by "d" (days) or
// "y" (365 days), or a Go duration such as "720h" or "90m". It refuses zero, negative and
// more than 100 years.
func ParseValidFor(v string) (time.Duration, error) {
	d, err := parseValidFor(v)
	if err != nil {
		return 0, fmt.Errorf("session: %w", err)
	}
	return d, nil
}

// parseValidFor is ParseValidFor with errors that start at the field ("valid_for ..."), for
// the problem list.
func parseValidFor(v string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("valid_for %q: want a number of days like \"90d\"", v)
		}
		d = time.Duration(min(days, 1<<20)) * 24 * time.Hour
	} else if n, ok := strings.CutSuffix(v, "y"); ok {
		years, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("valid_for %q: want a number of years like \"1y\"", v)
		}
		d = time.Duration(min(years, 1<<10)) * 365 * 24 * time.Hour
	} else {
		var err error
		d, err = time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("valid_for %q: want like \"90d\", \"1y\" or \"720h\": %w", v, err)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("valid_for %q: must be positive", v)
	}
	if d > maxValidity {
		return 0, fmt.Errorf("valid_for %q: more than 100 years", v)
	}
	return d, nil
}

// Security holds the session's attestation policy.
type Security struct {
	Attestation AttestationPolicy
}

// AttestationPolicy says which evidence the session accepts.
type AttestationPolicy struct {
	Mode     Mode        // hardware (default) or simulation
	Tolerate []Tolerance // platform weaknesses accepted anyway
	// IgnoreAdvisories lists the Intel security advisories (INTEL-SA-NNNNN) accepted on a
	// platform whose TCB level names them; "*" accepts every advisory. YAML key
	// ignore_advisories.
	IgnoreAdvisories []string
}

// AdvisoryWildcard in ignore_advisories accepts every advisory.
const AdvisoryWildcard = "*"

// Mode says which TEE evidence a session accepts.
type Mode string

// Attestation modes.
const (
	// ModeHardware accepts only quotes that chain to the Intel SGX Root CA.
	ModeHardware Mode = "hardware"
	// ModeSimulation accepts only simulated quotes; identities are marked as simulated.
	ModeSimulation Mode = "simulation"
)

// Tolerance is a platform or enclave weakness that a session accepts.
type Tolerance string

// Tolerances.
const (
	TolerateDebugMode               Tolerance = "debug-mode"
	TolerateOutdatedTCB             Tolerance = "outdated-tcb"
	TolerateHyperthreading          Tolerance = "hyperthreading"
	TolerateSoftwareHardeningNeeded Tolerance = "software-hardening-needed"
	TolerateInsecureConfiguration   Tolerance = "insecure-configuration"
	TolerateInsecureIGPU            Tolerance = "insecure-igpu"
)

// Tolerances lists every tolerance.
var Tolerances = []Tolerance{
	TolerateDebugMode, TolerateOutdatedTCB, TolerateHyperthreading,
	TolerateSoftwareHardeningNeeded, TolerateInsecureConfiguration, TolerateInsecureIGPU,
}

// AdvisoriesOf lists, for the tolerances that stand for a platform configuration, the Intel
// security advisories they accept: hyperthreading accepts L1TF (INTEL-SA-00161) and MDS
// (INTEL-SA-00233), whose mitigation is to disable hyperthreading; insecure-igpu accepts the
// integrated-graphics advisory INTEL-SA-00219. A TCB level whose configuration problem
// consists only of advisories accepted this way needs no insecure-configuration. The other
// tolerances accept a TCB status (see the attestation policy), never an advisory: every
// advisory must be accepted by one of these tolerances or by ignore_advisories.
var AdvisoriesOf = map[Tolerance][]string{
	TolerateHyperthreading: {"INTEL-SA-00161", "INTEL-SA-00233"},
	TolerateInsecureIGPU:   {"INTEL-SA-00219"},
}

// Tolerates reports whether the session accepts the weakness t.
func (p AttestationPolicy) Tolerates(t Tolerance) bool {
	return slices.Contains(p.Tolerate, t)
}

// IgnoresAdvisory reports whether ignore_advisories accepts the advisory id ("*" accepts all).
func (p AttestationPolicy) IgnoresAdvisory(id string) bool {
	for _, a := range p.IgnoreAdvisories {
		if a == AdvisoryWildcard || strings.EqualFold(a, id) {
			return true
		}
	}
	return false
}

// Service returns the service with the given name.
func (s *Session) Service(name string) (*Service, bool) {
	for i := range s.Services {
		if s.Services[i].Name == name {
			return &s.Services[i], true
		}
	}
	return nil, false
}

// Image returns the image with the given name.
func (s *Session) Image(name string) (*Image, bool) {
	for i := range s.Images {
		if s.Images[i].Name == name {
			return &s.Images[i], true
		}
	}
	return nil, false
}

// Secret returns the secret with the given name.
func (s *Session) Secret(name string) (*Secret, bool) {
	for i := range s.Secrets {
		if s.Secrets[i].Name == name {
			return &s.Secrets[i], true
		}
	}
	return nil, false
}

// ExportedTo reports whether the secret is exported to the named session whose document has
// hash docHash (a session_hash pin must match it).
func (s *Secret) ExportedTo(session, docHash string) bool {
	for _, e := range s.Export {
		if e.Allows(session, docHash) {
			return true
		}
	}
	return false
}

// exportNamed returns the export entries that name session, pinned or not.
func (s *Secret) exportNamed(session string) []Export {
	var out []Export
	for _, e := range s.Export {
		if e.Session == session {
			out = append(out, e)
		}
	}
	return out
}

// line returns the document line of a field path, or of its closest parent that has one;
// 0 for sessions that were not parsed.
func (s *Session) line(path string) int {
	for {
		if l, ok := s.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = path[:max(strings.LastIndexAny(path, ".["), 0)]
	}
}
