package attestation

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// What a TCB status is made of: each part needs its tolerance (see CheckPlatform).
const (
	partSoftwareHardening = "software hardening"
	partConfiguration     = "configuration"
	partOutOfDate         = "out of date"
)

var tcbParts = map[string][]string{
	dcap.TCBUpToDate:                          nil,
	dcap.TCBSWHardeningNeeded:                 {partSoftwareHardening},
	dcap.TCBConfigurationNeeded:               {partConfiguration},
	dcap.TCBConfigurationAndSWHardeningNeeded: {partConfiguration, partSoftwareHardening},
	dcap.TCBOutOfDate:                         {partOutOfDate},
	dcap.TCBOutOfDateConfigurationNeeded:      {partOutOfDate, partConfiguration},
}

// CheckPlatform applies the session's tolerances to the platform, as SCONE's do:
//
//   - the DEBUG attribute needs debug-mode;
//   - each part of the TCB status needs its tolerance: SWHardeningNeeded software-hardening-needed,
//     OutOfDate outdated-tcb, ConfigurationNeeded insecure-configuration, unless every advisory of
//     the level is one that a configuration tolerance accepts (hyperthreading for INTEL-SA-00161
//     and INTEL-SA-00233, insecure-igpu for INTEL-SA-00219: session.AdvisoriesOf);
//   - every advisory the TCB level names must be accepted, by such a tolerance or by
//     ignore_advisories (an ID, or "*"): a status tolerance never accepts advisories by itself.
//
// The caller is told the platform's status and advisories; the log also says which tolerance or
// advisory the session lacks.
func CheckPlatform(id *dcap.Identity, pol session.AttestationPolicy) error {
	if id.Debug && !pol.Tolerates(session.TolerateDebugMode) {
		return deny(attestapi.ReasonDebug, "the enclave runs in debug mode, which the session does not tolerate",
			"the enclave runs in debug mode and the session does not tolerate %q (security.attestation.tolerate)", session.TolerateDebugMode)
	}
	parts, known := tcbParts[id.TCBStatus]
	advisories := ""
	if len(id.AdvisoryIDs) > 0 {
		advisories = " (advisories " + strings.Join(id.AdvisoryIDs, ", ") + ")"
	}
	public := fmt.Sprintf("the platform's TCB status %s%s is not tolerated by the session", id.TCBStatus, advisories)
	if !known {
		return deny(attestapi.ReasonTCB, public, "TCB status %q is never tolerated", id.TCBStatus)
	}
	configAccepted := func(a string) bool {
		for t, ids := range session.AdvisoriesOf {
			if pol.Tolerates(t) && slices.Contains(ids, a) {
				return true
			}
		}
		return false
	}
	for _, p := range parts {
		var need session.Tolerance
		switch p {
		case partSoftwareHardening:
			need = session.TolerateSoftwareHardeningNeeded
		case partOutOfDate:
			need = session.TolerateOutdatedTCB
		case partConfiguration:
			need = session.TolerateInsecureConfiguration
			if len(id.AdvisoryIDs) > 0 && !slices.ContainsFunc(id.AdvisoryIDs, func(a string) bool { return !configAccepted(a) }) {
				continue // every advisory is accepted by a configuration tolerance
			}
		}
		if !pol.Tolerates(need) {
			return deny(attestapi.ReasonTCB, public, "TCB status %s%s needs %q in security.attestation.tolerate", id.TCBStatus, advisories, need)
		}
	}
	for _, a := range id.AdvisoryIDs {
		if !pol.IgnoresAdvisory(a) && !configAccepted(a) {
			return deny(attestapi.ReasonTCB, public, "TCB status %s%s: advisory %s is neither ignored (security.attestation.ignore_advisories) "+
				"nor accepted by a tolerance", id.TCBStatus, advisories, a)
		}
	}
	return nil
}

// CheckService checks the enclave identity against the service's mrenclaves or attestation
// variants. The caller is told what it presented; the log also says what the service allows.
func CheckService(id *dcap.Identity, svc *session.Service) error {
	mre := hex.EncodeToString(id.MREnclave)
	if len(svc.MREnclaves) > 0 {
		if slices.Contains(svc.MREnclaves, mre) {
			return nil
		}
		return deny(attestapi.ReasonMREnclave, fmt.Sprintf("mrenclave %s is not accepted by service %q", mre, svc.Name),
			"mrenclave mismatch: got %s, session allows [%s]", mre, strings.Join(svc.MREnclaves, ", "))
	}
	if len(svc.Attestation) == 0 {
		return deny(attestapi.ReasonMREnclave, fmt.Sprintf("service %q accepts no enclave", svc.Name),
			"service %q lists no mrenclaves and no attestation variants: nothing is accepted", svc.Name)
	}
	var reasons []string
	lastReason := attestapi.ReasonMREnclave
	for i, v := range svc.Attestation {
		r, why := matchVariant(id, mre, v)
		if r == attestapi.ReasonNone {
			return nil
		}
		lastReason = r
		reasons = append(reasons, fmt.Sprintf("attestation[%d]: %s", i, why))
	}
	return deny(lastReason, fmt.Sprintf("the enclave (mrenclave %s, mrsigner %s, isvprodid %d, isvsvn %d) matches no attestation variant of service %q",
		mre, hex.EncodeToString(id.MRSigner), id.ISVProdID, id.ISVSVN, svc.Name),
		"no attestation variant matches: %s", strings.Join(reasons, "; "))
}

func matchVariant(id *dcap.Identity, mre string, v session.AttestationVariant) (attestapi.Reason, string) {
	if len(v.MREnclaves) > 0 && !slices.Contains(v.MREnclaves, mre) {
		return attestapi.ReasonMREnclave, fmt.Sprintf("mrenclave mismatch: got %s, variant allows [%s]", mre, strings.Join(v.MREnclaves, ", "))
	}
	if s := v.Signer; s != nil {
		mrs := hex.EncodeToString(id.MRSigner)
		switch {
		case mrs != s.MRSigner:
			return attestapi.ReasonSigner, fmt.Sprintf("mrsigner mismatch: got %s, want %s", mrs, s.MRSigner)
		case id.ISVProdID != s.ISVProdID:
			return attestapi.ReasonSigner, fmt.Sprintf("isvprodid mismatch: got %d, want %d", id.ISVProdID, s.ISVProdID)
		case id.ISVSVN < s.ISVSVN:
			return attestapi.ReasonSigner, fmt.Sprintf("isvsvn too low: got %d, want at least %d", id.ISVSVN, s.ISVSVN)
		}
	}
	return attestapi.ReasonNone, ""
}
