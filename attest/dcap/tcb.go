package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// openTCBInfo checks the TCB Info document's signature and parses its body.
func openTCBInfo(doc []byte, key *ecdsa.PublicKey) (*TCBInfo, error) {
	const what = "TCB Info"
	var signed SignedTCBInfo
	if err := decodeJSON(doc, &signed); err != nil {
		return nil, fail(ReasonMalformed, "%s: %v", what, err)
	}
	if err := openSigned(what, signed.TCBInfo, signed.Signature, key); err != nil {
		return nil, err
	}
	var info TCBInfo
	if err := decodeJSON(signed.TCBInfo, &info); err != nil {
		return nil, fail(ReasonMalformed, "%s: body: %v", what, err)
	}
	if info.ID != "SGX" {
		return nil, fail(ReasonUnsupported, "%s: id: got %q, want \"SGX\"", what, info.ID)
	}
	if info.Version != 3 {
		return nil, fail(ReasonUnsupported, "%s: version: got %d, want 3", what, info.Version)
	}
	return &info, nil
}

// openQEIdentity checks the QE Identity document's signature and parses its body.
func openQEIdentity(doc []byte, key *ecdsa.PublicKey) (*QEIdentity, error) {
	const what = "QE Identity"
	var signed SignedQEIdentity
	if err := decodeJSON(doc, &signed); err != nil {
		return nil, fail(ReasonMalformed, "%s: %v", what, err)
	}
	if err := openSigned(what, signed.EnclaveIdentity, signed.Signature, key); err != nil {
		return nil, err
	}
	var id QEIdentity
	if err := decodeJSON(signed.EnclaveIdentity, &id); err != nil {
		return nil, fail(ReasonMalformed, "%s: body: %v", what, err)
	}
	if id.ID != "QE" {
		return nil, fail(ReasonUnsupported, "%s: id: got %q, want \"QE\"", what, id.ID)
	}
	if id.Version != 2 {
		return nil, fail(ReasonUnsupported, "%s: version: got %d, want 2", what, id.Version)
	}
	return &id, nil
}

// decodeJSON decodes exactly one JSON value.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("JSON: %w", err)
	}
	if dec.More() {
		return errors.New("JSON: data after the document")
	}
	return nil
}

// matchQE checks the QE report against the QE Identity and returns the QE's TCB level.
func matchQE(id *QEIdentity, qe *ReportBody) (*QETCBLevel, error) {
	const what = "QE Identity"
	mrsigner, err := decodeHexField(what, "mrsigner", id.MRSigner, 32)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(mrsigner, qe.MRSigner[:]) {
		return nil, fail(ReasonQEIdentity, "QE report: MRSIGNER: got %x, want %x (QE Identity)", qe.MRSigner[:], mrsigner)
	}
	if qe.ISVProdID != id.ISVProdID {
		return nil, fail(ReasonQEIdentity, "QE report: ISVPRODID: got %d, want %d (QE Identity)", qe.ISVProdID, id.ISVProdID)
	}
	var misc [4]byte
	binary.LittleEndian.PutUint32(misc[:], qe.MiscSelect)
	if err := matchMasked(what, "MISCSELECT", "miscselect", misc[:], id.MiscSelect, id.MiscSelectMask); err != nil {
		return nil, err
	}
	if err := matchMasked(what, "ATTRIBUTES", "attributes", qe.Attributes[:], id.Attributes, id.AttributesMask); err != nil {
		return nil, err
	}
	for i := range id.TCBLevels {
		l := &id.TCBLevels[i]
		if l.TCB.ISVSVN <= qe.ISVSVN {
			if !knownTCBStatus[l.TCBStatus] {
				return nil, fail(ReasonTCBUnknown, "%s: TCB level isvsvn %d: unknown tcbStatus %q", what, l.TCB.ISVSVN, l.TCBStatus)
			}
			return l, nil
		}
	}
	// Intel's QVL treats a QE below every listed level as revoked.
	return nil, fail(ReasonTCBRevoked, "QE report: ISVSVN %d is below every TCB level of the QE Identity (treated as %s)", qe.ISVSVN, TCBRevoked)
}

// matchMasked checks report & mask == want, byte by byte in report byte order.
func matchMasked(what, reportField, field string, got []byte, wantHex, maskHex string) error {
	want, err := decodeHexField(what, field, wantHex, len(got))
	if err != nil {
		return err
	}
	mask, err := decodeHexField(what, field+"Mask", maskHex, len(got))
	if err != nil {
		return err
	}
	masked := make([]byte, len(got))
	for i := range got {
		masked[i] = got[i] & mask[i]
	}
	if !bytes.Equal(masked, want) {
		return fail(ReasonQEIdentity, "QE report: %s: got %x, masked with %x gives %x, want %x (QE Identity)", reportField, got, mask, masked, want)
	}
	return nil
}

// platformLevel finds the platform's TCB level in the TCB Info: the first level whose 16
// component SVNs and PCESVN are all at or below the PCK certificate's.
func platformLevel(info *TCBInfo, ext *PCKExtensions) (*TCBLevel, error) {
	const what = "TCB Info"
	fmspc, err := decodeHexField(what, "fmspc", info.FMSPC, len(ext.FMSPC))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(fmspc, ext.FMSPC[:]) {
		return nil, fail(ReasonTCBUnknown, "%s: fmspc: TCB Info is for %X, the PCK certificate has %X", what, fmspc, ext.FMSPC[:])
	}
	pceID, err := decodeHexField(what, "pceId", info.PCEID, len(ext.PCEID))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pceID, ext.PCEID[:]) {
		return nil, fail(ReasonTCBUnknown, "%s: pceId: TCB Info is for %X, the PCK certificate has %X", what, pceID, ext.PCEID[:])
	}
	for i := range info.TCBLevels {
		l := &info.TCBLevels[i]
		comps := l.TCB.SGXTCBComponents
		if len(comps) != len(ext.TCBComponents) {
			return nil, fail(ReasonMalformed, "%s: TCB level %d: got %d sgxtcbcomponents, want %d", what, i, len(comps), len(ext.TCBComponents))
		}
		if !componentsAtOrBelow(comps, ext.TCBComponents) || l.TCB.PCESVN > ext.PCESVN {
			continue
		}
		if !knownTCBStatus[l.TCBStatus] {
			return nil, fail(ReasonTCBUnknown, "%s: TCB level %d: unknown tcbStatus %q", what, i, l.TCBStatus)
		}
		return l, nil
	}
	return nil, fail(ReasonTCBUnknown, "%s: no TCB level at or below the platform's (components %v, PCESVN %d)", what, ext.TCBComponents, ext.PCESVN)
}

func componentsAtOrBelow(level []TCBComponent, platform [16]int) bool {
	for i, c := range level {
		if c.SVN > platform[i] {
			return false
		}
	}
	return true
}

// convergeTCB combines the platform's and the QE's TCB statuses as Intel's QVL does: an
// out-of-date QE makes an otherwise current platform OutOfDate (or
// OutOfDateConfigurationNeeded when the platform also needs configuration). Revoked on either
// side is an error.
func convergeTCB(platform, qe string) (string, error) {
	if qe == TCBRevoked {
		return "", fail(ReasonTCBRevoked, "QE report: QE Identity TCB status is %s", TCBRevoked)
	}
	if platform == TCBRevoked {
		return "", fail(ReasonTCBRevoked, "TCB Info: the platform's TCB level is %s", TCBRevoked)
	}
	if qe == TCBOutOfDate {
		switch platform {
		case TCBUpToDate, TCBSWHardeningNeeded:
			return TCBOutOfDate, nil
		case TCBConfigurationNeeded, TCBConfigurationAndSWHardeningNeeded:
			return TCBOutOfDateConfigurationNeeded, nil
		}
	}
	return platform, nil
}

// mergeAdvisories returns a then the IDs of b not in a.
func mergeAdvisories(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, id := range b {
		dup := false
		for _, have := range out {
			if strings.EqualFold(have, id) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, id)
		}
	}
	return out
}

// fmspcString formats an FMSPC as Intel does (upper-case hex).
func fmspcString(f [6]byte) string { return strings.ToUpper(hex.EncodeToString(f[:])) }
