package sim

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/attestmesh/attestmesh/attest/dcap"
)

// Collateral validity, as Intel PCS issues it.
const (
	collateralBackdate = time.Minute
	collateralValidity = 30 * 24 * time.Hour
	// tcbEvaluationDataNumber of the simulated collateral.
	tcbEvaluationDataNumber = 17
)

// The JSON documents below use Intel PCS v4 field names and field order.

type tcbInfoBody struct {
	ID                      string     `json:"id"`
	Version                 int        `json:"version"`
	IssueDate               string     `json:"issueDate"`
	NextUpdate              string     `json:"nextUpdate"`
	FMSPC                   string     `json:"fmspc"`
	PCEID                   string     `json:"pceId"`
	TCBType                 int        `json:"tcbType"`
	TCBEvaluationDataNumber int        `json:"tcbEvaluationDataNumber"`
	TCBLevels               []tcbLevel `json:"tcbLevels"`
}

type tcbLevel struct {
	TCB         tcbLevelTCB `json:"tcb"`
	TCBDate     string      `json:"tcbDate"`
	TCBStatus   string      `json:"tcbStatus"`
	AdvisoryIDs []string    `json:"advisoryIDs,omitempty"`
}

type tcbLevelTCB struct {
	SGXTCBComponents []tcbComponent `json:"sgxtcbcomponents"`
	PCESVN           int            `json:"pcesvn"`
}

type tcbComponent struct {
	SVN int `json:"svn"`
}

type qeIdentityBody struct {
	ID                      string       `json:"id"`
	Version                 int          `json:"version"`
	IssueDate               string       `json:"issueDate"`
	NextUpdate              string       `json:"nextUpdate"`
	TCBEvaluationDataNumber int          `json:"tcbEvaluationDataNumber"`
	MiscSelect              string       `json:"miscselect"`
	MiscSelectMask          string       `json:"miscselectMask"`
	Attributes              string       `json:"attributes"`
	AttributesMask          string       `json:"attributesMask"`
	MRSigner                string       `json:"mrsigner"`
	ISVProdID               int          `json:"isvprodid"`
	TCBLevels               []qeTCBLevel `json:"tcbLevels"`
}

type qeTCBLevel struct {
	TCB       qeTCB  `json:"tcb"`
	TCBDate   string `json:"tcbDate"`
	TCBStatus string `json:"tcbStatus"`
}

type qeTCB struct {
	ISVSVN int `json:"isvsvn"`
}

func pcsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func upperHex(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }

func components(cpusvn [16]byte) []tcbComponent {
	out := make([]tcbComponent, len(cpusvn))
	for i, svn := range cpusvn {
		out[i] = tcbComponent{SVN: int(svn)}
	}
	return out
}

// tcbLevels lists the TCB levels of the simulated TCB Info, newest first. The platform's own
// level has the platform's status. For an out-of-date platform a newer, up-to-date level
// (every component and the PCESVN one higher) comes first, as in Intel's TCB Info; an older
// out-of-date level follows an up-to-date platform's.
func (p *Platform) tcbLevels(now time.Time) []tcbLevel {
	tcbDate := pcsTime(now.Add(-30 * 24 * time.Hour).Truncate(24 * time.Hour))
	own := tcbLevel{
		TCB:         tcbLevelTCB{SGXTCBComponents: components(p.ext.CPUSVN), PCESVN: int(p.ext.PCESVN)},
		TCBDate:     tcbDate,
		TCBStatus:   p.tcbStatus,
		AdvisoryIDs: p.advisoryIDs,
	}
	var levels []tcbLevel
	if p.tcbStatus == dcap.TCBOutOfDate || p.tcbStatus == dcap.TCBOutOfDateConfigurationNeeded {
		newer := p.ext.CPUSVN
		for i := range newer {
			if newer[i] < 255 {
				newer[i]++
			}
		}
		levels = append(levels, tcbLevel{
			TCB:       tcbLevelTCB{SGXTCBComponents: components(newer), PCESVN: int(p.ext.PCESVN) + 1},
			TCBDate:   pcsTime(now.Truncate(24 * time.Hour)),
			TCBStatus: dcap.TCBUpToDate,
		})
	}
	levels = append(levels, own)
	if p.ext.PCESVN > 0 {
		levels = append(levels, tcbLevel{
			TCB:         tcbLevelTCB{SGXTCBComponents: components(p.ext.CPUSVN), PCESVN: int(p.ext.PCESVN) - 1},
			TCBDate:     pcsTime(now.Add(-365 * 24 * time.Hour).Truncate(24 * time.Hour)),
			TCBStatus:   dcap.TCBOutOfDate,
			AdvisoryIDs: []string{"INTEL-SA-00000"},
		})
	}
	return levels
}

// sign wraps body as {"<field>":body,"signature":hex(r||s)} with the TCB signing key's
// ECDSA-P256 signature over SHA-256 of exactly the body's bytes.
func (p *Platform) sign(field string, body []byte) ([]byte, error) {
	sig, err := signRaw(p.tcbKey, body)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString(`{"`)
	out.WriteString(field)
	out.WriteString(`":`)
	out.Write(body)
	out.WriteString(`,"signature":"`)
	out.WriteString(hex.EncodeToString(sig[:]))
	out.WriteString(`"}`)
	return out.Bytes(), nil
}

// Collateral returns the platform's TCB Info (v3) and QE Identity (v2) as Intel PCS v4 serves
// them, issued at now minus a minute and valid for 30 days, both signed by the platform's TCB
// signing key, with the TCB signing chain (TCB signing certificate, then root) in PEM and the
// CRLs of the root and PCK CAs (DER). The platform's TCB level has the status given in
// PlatformOptions; the QE is up to date.
func (p *Platform) Collateral(now time.Time) (dcap.Collateral, error) {
	now = now.UTC().Truncate(time.Second)
	issue, next := pcsTime(now.Add(-collateralBackdate)), pcsTime(now.Add(collateralValidity))

	tcbBody, err := json.Marshal(tcbInfoBody{
		ID: "SGX", Version: 3, IssueDate: issue, NextUpdate: next,
		FMSPC:                   upperHex(p.ext.FMSPC[:]),
		PCEID:                   upperHex(p.ext.PCEID[:]),
		TCBEvaluationDataNumber: tcbEvaluationDataNumber,
		TCBLevels:               p.tcbLevels(now),
	})
	if err != nil {
		return dcap.Collateral{}, fmt.Errorf("sim: encode TCB Info: %w", err)
	}
	tcbInfo, err := p.sign("tcbInfo", tcbBody)
	if err != nil {
		return dcap.Collateral{}, fmt.Errorf("sim: sign TCB Info: %w", err)
	}

	attrMask := [16]byte{0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	var attrs [16]byte
	for i := range attrs {
		attrs[i] = qeAttributes[i] & attrMask[i]
	}
	qeBody, err := json.Marshal(qeIdentityBody{
		ID: "QE", Version: 2, IssueDate: issue, NextUpdate: next,
		TCBEvaluationDataNumber: tcbEvaluationDataNumber,
		MiscSelect:              "00000000",
		MiscSelectMask:          "FFFFFFFF",
		Attributes:              upperHex(attrs[:]),
		AttributesMask:          upperHex(attrMask[:]),
		MRSigner:                upperHex(QEMRSigner[:]),
		ISVProdID:               QEISVProdID,
		TCBLevels: []qeTCBLevel{{
			TCB:       qeTCB{ISVSVN: QEISVSVN},
			TCBDate:   pcsTime(now.Add(-30 * 24 * time.Hour).Truncate(24 * time.Hour)),
			TCBStatus: dcap.TCBUpToDate,
		}},
	})
	if err != nil {
		return dcap.Collateral{}, fmt.Errorf("sim: encode QE Identity: %w", err)
	}
	qeIdentity, err := p.sign("enclaveIdentity", qeBody)
	if err != nil {
		return dcap.Collateral{}, fmt.Errorf("sim: sign QE Identity: %w", err)
	}

	var chain bytes.Buffer
	for _, der := range [][]byte{p.tcbSigning.Raw, p.root.Raw} {
		if err := pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return dcap.Collateral{}, fmt.Errorf("sim: encode TCB signing chain: %w", err)
		}
	}
	return dcap.Collateral{TCBInfo: tcbInfo, QEIdentity: qeIdentity, TCBSignChain: chain.Bytes(), RootCACRL: p.rootCRL, PCKCRL: p.pckCRL}, nil
}
