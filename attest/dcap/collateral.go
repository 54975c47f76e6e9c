package dcap

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"time"
)

// TCB statuses, as Intel writes them in TCB Info and QE Identity and as Identity.TCBStatus
// reports them.
const (
	TCBUpToDate                          = "UpToDate"
	TCBSWHardeningNeeded                 = "SWHardeningNeeded"
	TCBConfigurationNeeded               = "ConfigurationNeeded"
	TCBConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	TCBOutOfDate                         = "OutOfDate"
	TCBOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	TCBRevoked                           = "Revoked"
)

var knownTCBStatus = map[string]bool{
	TCBUpToDate: true, TCBSWHardeningNeeded: true, TCBConfigurationNeeded: true,
	TCBConfigurationAndSWHardeningNeeded: true, TCBOutOfDate: true,
	TCBOutOfDateConfigurationNeeded: true, TCBRevoked: true,
}

// SignedTCBInfo is the TCB Info document as Intel PCS serves it (GET
// /sgx/certification/v4/tcb?fmspc=...): {"tcbInfo":{...},"signature":"<hex>"}.
//
// Signature is the hex encoding of r || s (32 bytes each, big-endian) of an ECDSA P-256
// signature, by the TCB signing key, over SHA-256 of the exact bytes of the "tcbInfo" value
// as they appear in the document: from its opening '{' to its closing '}', whitespace and key
// order included. A verifier must never re-encode the body before checking the signature;
// json.RawMessage keeps those bytes.
type SignedTCBInfo struct {
	TCBInfo   json.RawMessage `json:"tcbInfo"`
	Signature string          `json:"signature"`
}

// TCBInfo is the body of a TCB Info document, version 3 (SGX).
type TCBInfo struct {
	ID                      string     `json:"id"` // "SGX"
	Version                 int        `json:"version"`
	IssueDate               time.Time  `json:"issueDate"`
	NextUpdate              time.Time  `json:"nextUpdate"`
	FMSPC                   string     `json:"fmspc"` // 6 bytes, hex
	PCEID                   string     `json:"pceId"` // 2 bytes, hex
	TCBType                 int        `json:"tcbType"`
	TCBEvaluationDataNumber int        `json:"tcbEvaluationDataNumber"`
	TCBLevels               []TCBLevel `json:"tcbLevels"` // highest first
}

// TCBLevel is one platform TCB level of a TCB Info.
type TCBLevel struct {
	TCB         TCBLevelTCB `json:"tcb"`
	TCBDate     time.Time   `json:"tcbDate"`
	TCBStatus   string      `json:"tcbStatus"`
	AdvisoryIDs []string    `json:"advisoryIDs,omitempty"`
}

// TCBLevelTCB is the TCB of a level: 16 SGX TCB components and the PCESVN.
type TCBLevelTCB struct {
	SGXTCBComponents []TCBComponent `json:"sgxtcbcomponents"`
	PCESVN           int            `json:"pcesvn"`
}

// TCBComponent is one SGX TCB component of a level.
type TCBComponent struct {
	SVN      int    `json:"svn"`
	Category string `json:"category,omitempty"`
	Type     string `json:"type,omitempty"`
}

// SignedQEIdentity is the QE Identity document as Intel PCS serves it (GET
// /sgx/certification/v4/qe/identity): {"enclaveIdentity":{...},"signature":"<hex>"}. The
// signature is made as for SignedTCBInfo, over the exact bytes of the "enclaveIdentity" value.
type SignedQEIdentity struct {
	EnclaveIdentity json.RawMessage `json:"enclaveIdentity"`
	Signature       string          `json:"signature"`
}

// QEIdentity is the body of a QE Identity document, version 2.
type QEIdentity struct {
	ID                      string       `json:"id"` // "QE"
	Version                 int          `json:"version"`
	IssueDate               time.Time    `json:"issueDate"`
	NextUpdate              time.Time    `json:"nextUpdate"`
	TCBEvaluationDataNumber int          `json:"tcbEvaluationDataNumber"`
	MiscSelect              string       `json:"miscselect"`     // 4 bytes, hex, report byte order
	MiscSelectMask          string       `json:"miscselectMask"` // 4 bytes, hex
	Attributes              string       `json:"attributes"`     // 16 bytes, hex, report byte order
	AttributesMask          string       `json:"attributesMask"` // 16 bytes, hex
	MRSigner                string       `json:"mrsigner"`       // 32 bytes, hex
	ISVProdID               uint16       `json:"isvprodid"`
	TCBLevels               []QETCBLevel `json:"tcbLevels"` // highest first
}

// QETCBLevel is one TCB level of a QE Identity.
type QETCBLevel struct {
	TCB         QETCB     `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs,omitempty"`
}

// QETCB is the TCB of a QE Identity level.
type QETCB struct {
	ISVSVN uint16 `json:"isvsvn"`
}

// SignTCBInfo encodes info and signs it with the TCB signing key, returning the document
// {"tcbInfo":...,"signature":...} that Verify accepts as Collateral.TCBInfo.
func SignTCBInfo(info *TCBInfo, key *ecdsa.PrivateKey) ([]byte, error) {
	body, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("dcap: TCB Info: %w", err)
	}
	sig, err := signBody(key, body)
	if err != nil {
		return nil, fmt.Errorf("dcap: TCB Info: %w", err)
	}
	return json.Marshal(SignedTCBInfo{TCBInfo: body, Signature: sig})
}

// SignQEIdentity encodes id and signs it with the TCB signing key, returning the document
// {"enclaveIdentity":...,"signature":...} that Verify accepts as Collateral.QEIdentity.
func SignQEIdentity(id *QEIdentity, key *ecdsa.PrivateKey) ([]byte, error) {
	body, err := json.Marshal(id)
	if err != nil {
		return nil, fmt.Errorf("dcap: QE Identity: %w", err)
	}
	sig, err := signBody(key, body)
	if err != nil {
		return nil, fmt.Errorf("dcap: QE Identity: %w", err)
	}
	return json.Marshal(SignedQEIdentity{EnclaveIdentity: body, Signature: sig})
}

func signBody(key *ecdsa.PrivateKey, body []byte) (string, error) {
	h := sha256.Sum256(body)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	var sig [ECDSASigSize]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return hex.EncodeToString(sig[:]), nil
}

// verifyRaw checks an ECDSA P-256 signature in r || s form over SHA-256(msg).
func verifyRaw(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != ECDSASigSize {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// openSigned checks the signature of a collateral body with the TCB signing key.
func openSigned(what string, body json.RawMessage, sigHex string, key *ecdsa.PublicKey) error {
	if len(body) == 0 {
		return fail(ReasonMalformed, "%s: body not present", what)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil {
		return fail(ReasonMalformed, "%s: signature: not hex: %v", what, err)
	}
	if len(sig) != ECDSASigSize {
		return fail(ReasonMalformed, "%s: signature: got %d bytes, want %d (r || s)", what, len(sig), ECDSASigSize)
	}
	if !verifyRawCached(key, body, sig) {
		return fail(ReasonCollateralSignature, "%s: signature does not verify with the TCB signing key", what)
	}
	return nil
}

// checkFresh applies the collateral timing rules.
//
// The document must already be issued (issueDate <= now). After that, one bound decides:
//   - maxAge == 0: Intel's own nextUpdate (now < nextUpdate);
//   - maxAge > 0: the operator's policy replaces nextUpdate (now < issueDate + maxAge).
//
// nextUpdate is when Intel will have published the next version, not when this one stops
// being true, so a relying party may choose to accept collateral for longer (or shorter), as
// oasis-core's TCBValidityPeriod does. The real vectors pin this down: the QE Identity issued at
// 1671194736 has nextUpdate 1673786736 (30 days); at 1673786737 a 30-day maximum age refuses
// it while a 90-day maximum age accepts it, although nextUpdate has passed.
func checkFresh(what string, issue, next, now time.Time, maxAge time.Duration) error {
	if issue.IsZero() || next.IsZero() {
		return fail(ReasonMalformed, "%s: issueDate and nextUpdate must both be present", what)
	}
	if !next.After(issue) {
		return fail(ReasonMalformed, "%s: nextUpdate %s is not after issueDate %s", what, rfc(next), rfc(issue))
	}
	if now.Before(issue) {
		return fail(ReasonCollateralNotYetValid, "%s: issueDate %s is in the future (verification time %s)", what, rfc(issue), rfc(now))
	}
	if maxAge > 0 {
		if limit := issue.Add(maxAge); !now.Before(limit) {
			return fail(ReasonCollateralExpired, "%s: expired: issued %s, older than the maximum age %s at verification time %s",
				what, rfc(issue), maxAge, rfc(now))
		}
		return nil
	}
	if !now.Before(next) {
		return fail(ReasonCollateralExpired, "%s: expired: nextUpdate was %s (verification time %s)", what, rfc(next), rfc(now))
	}
	return nil
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// decodeHexField decodes a fixed-size hex field of a collateral body.
func decodeHexField(what, field, s string, size int) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fail(ReasonMalformed, "%s: %s: not hex: %v", what, field, err)
	}
	if len(b) != size {
		return nil, fail(ReasonMalformed, "%s: %s: got %d bytes, want %d", what, field, len(b), size)
	}
	return b, nil
}
