package attestation

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// tcbTolerance maps a TCB status other than UpToDate to the tolerance that accepts it. A status
// that needs several tolerances lists them all.
var tcbTolerance = map[string][]session.Tolerance{
	dcap.TCBSWHardeningNeeded:                 {session.TolerateSoftwareHardeningNeeded},
	dcap.TCBConfigurationNeeded:               {session.TolerateInsecureConfiguration},
	dcap.TCBConfigurationAndSWHardeningNeeded: {session.TolerateInsecureConfiguration, session.TolerateSoftwareHardeningNeeded},
	dcap.TCBOutOfDate:                         {session.TolerateOutdatedTCB},
	dcap.TCBOutOfDateConfigurationNeeded:      {session.TolerateOutdatedTCB, session.TolerateInsecureConfiguration},
}

// CheckPlatform applies the session's tolerances to the platform: the DEBUG attribute and the
// TCB status. The error says which tolerance would be needed.
func CheckPlatform(id *dcap.Identity, pol session.AttestationPolicy) error {
	if id.Debug && !pol.Tolerates(session.TolerateDebugMode) {
		return fmt.Errorf("%w: the enclave runs in debug mode and the session does not tolerate %q (security.attestation.tolerate)", refuse(ReasonDebug), session.TolerateDebugMode)
	}
	if id.TCBStatus == dcap.TCBUpToDate {
		return nil
	}
	need, ok := tcbTolerance[id.TCBStatus]
	if !ok {
		return fmt.Errorf("%w: TCB status %q is never tolerated", refuse(ReasonTCB), id.TCBStatus)
	}
	for _, t := range need {
		if !pol.Tolerates(t) {
			advisories := ""
			if len(id.AdvisoryIDs) > 0 {
				advisories = " (advisories " + strings.Join(id.AdvisoryIDs, ", ") + ")"
			}
			return fmt.Errorf("%w: TCB status %s%s needs %q in security.attestation.tolerate", refuse(ReasonTCB), id.TCBStatus, advisories, t)
		}
	}
	return nil
}

// CheckService checks the enclave identity against the service's mrenclaves or attestation
// variants. The error lists what was expected and what was got.
func CheckService(id *dcap.Identity, svc *session.Service) error {
	mre := hex.EncodeToString(id.MREnclave)
	if len(svc.MREnclaves) > 0 {
		if slices.Contains(svc.MREnclaves, mre) {
			return nil
		}
		return fmt.Errorf("%w: mrenclave mismatch: got %s, session allows [%s]", refuse(ReasonMREnclave), mre, strings.Join(svc.MREnclaves, ", "))
	}
	if len(svc.Attestation) == 0 {
		return fmt.Errorf("%w: service %q lists no mrenclaves and no attestation variants: nothing is accepted", refuse(ReasonMREnclave), svc.Name)
	}
	var reasons []string
	lastReason := ReasonMREnclave
	for i, v := range svc.Attestation {
		r, why := matchVariant(id, mre, v)
		if r == ReasonNone {
			return nil
		}
		lastReason = r
		reasons = append(reasons, fmt.Sprintf("attestation[%d]: %s", i, why))
	}
	return fmt.Errorf("%w: no attestation variant matches: %s", refuse(lastReason), strings.Join(reasons, "; "))
}

func matchVariant(id *dcap.Identity, mre string, v session.AttestationVariant) (Reason, string) {
	if len(v.MREnclaves) > 0 && !slices.Contains(v.MREnclaves, mre) {
		return ReasonMREnclave, fmt.Sprintf("mrenclave mismatch: got %s, variant allows [%s]", mre, strings.Join(v.MREnclaves, ", "))
	}
	if s := v.Signer; s != nil {
		mrs := hex.EncodeToString(id.MRSigner)
		switch {
		case mrs != s.MRSigner:
			return ReasonSigner, fmt.Sprintf("mrsigner mismatch: got %s, want %s", mrs, s.MRSigner)
		case id.ISVProdID != s.ISVProdID:
			return ReasonSigner, fmt.Sprintf("isvprodid mismatch: got %d, want %d", id.ISVProdID, s.ISVProdID)
		case id.ISVSVN < s.ISVSVN:
			return ReasonSigner, fmt.Sprintf("isvsvn too low: got %d, want at least %d", id.ISVSVN, s.ISVSVN)
		}
	}
	return ReasonNone, ""
}
