package dcap

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// OIDs of the SGX extension in PCK certificates (Intel SGX PCK Certificate and CRL Profile).
var (
	oidSGXExtensions = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidPPID          = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 1}
	oidTCB           = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 2}
	oidPCEID         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
	oidSGXType       = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
)

// OIDSGXExtensions is the OID of the SGX extension that a PCK certificate carries.
func OIDSGXExtensions() asn1.ObjectIdentifier {
	return append(asn1.ObjectIdentifier(nil), oidSGXExtensions...)
}

// PCKExtensions is what the verifier uses from a PCK certificate's SGX extension.
type PCKExtensions struct {
	PPID          []byte
	CPUSVN        [16]byte
	TCBComponents [16]int // SGX TCB component SVNs 01..16
	PCESVN        int
	PCEID         [2]byte
	FMSPC         [6]byte
}

// asn1Entry is one element of the SGX extension: SEQUENCE { OID, value }.
type asn1Entry struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// ParsePCKExtensions reads the SGX extension (OID 1.2.840.113741.1.13.1) of a PCK
// certificate: PPID, the TCB (16 component SVNs, PCESVN, CPUSVN), PCE ID and FMSPC.
func ParsePCKExtensions(c *x509.Certificate) (*PCKExtensions, error) {
	var raw []byte
	for _, e := range c.Extensions {
		if e.Id.Equal(oidSGXExtensions) {
			if raw != nil {
				return nil, fmt.Errorf("dcap: PCK certificate: SGX extension %s appears twice", oidSGXExtensions)
			}
			raw = e.Value
		}
	}
	if raw == nil {
		return nil, fmt.Errorf("dcap: PCK certificate: SGX extension %s not present", oidSGXExtensions)
	}
	entries, err := parseEntries(raw, "SGX extension")
	if err != nil {
		return nil, err
	}
	var (
		ext  PCKExtensions
		seen = map[string]bool{}
	)
	for _, e := range entries {
		key := e.ID.String()
		if seen[key] {
			return nil, fmt.Errorf("dcap: PCK certificate: SGX extension: %s appears twice", key)
		}
		seen[key] = true
		switch {
		case e.ID.Equal(oidPPID):
			if ext.PPID, err = octets(e.Value, "PPID", 16); err != nil {
				return nil, err
			}
		case e.ID.Equal(oidPCEID):
			b, err := octets(e.Value, "PCE ID", 2)
			if err != nil {
				return nil, err
			}
			copy(ext.PCEID[:], b)
		case e.ID.Equal(oidFMSPC):
			b, err := octets(e.Value, "FMSPC", 6)
			if err != nil {
				return nil, err
			}
			copy(ext.FMSPC[:], b)
		case e.ID.Equal(oidTCB):
			if err := parseTCB(e.Value, &ext); err != nil {
				return nil, err
			}
		}
	}
	for _, want := range []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{{oidTCB, "TCB"}, {oidPCEID, "PCE ID"}, {oidFMSPC, "FMSPC"}} {
		if !seen[want.oid.String()] {
			return nil, fmt.Errorf("dcap: PCK certificate: SGX extension: %s (%s) not present", want.name, want.oid)
		}
	}
	return &ext, nil
}

func parseEntries(der []byte, what string) ([]asn1Entry, error) {
	var entries []asn1Entry
	rest, err := asn1.Unmarshal(der, &entries)
	if err != nil {
		return nil, fmt.Errorf("dcap: PCK certificate: %s: %w", what, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("dcap: PCK certificate: %s: %d trailing bytes", what, len(rest))
	}
	return entries, nil
}

func octets(v asn1.RawValue, what string, size int) ([]byte, error) {
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagOctetString || v.IsCompound {
		return nil, fmt.Errorf("dcap: PCK certificate: SGX extension: %s: ASN.1 tag %d, want OCTET STRING", what, v.Tag)
	}
	if len(v.Bytes) != size {
		return nil, fmt.Errorf("dcap: PCK certificate: SGX extension: %s: got %d bytes, want %d", what, len(v.Bytes), size)
	}
	return v.Bytes, nil
}

func parseTCB(v asn1.RawValue, ext *PCKExtensions) error {
	if v.Tag != asn1.TagSequence || !v.IsCompound {
		return fmt.Errorf("dcap: PCK certificate: SGX extension: TCB: ASN.1 tag %d, want SEQUENCE", v.Tag)
	}
	entries, err := parseEntries(v.FullBytes, "SGX extension: TCB")
	if err != nil {
		return err
	}
	seen := make(map[int]bool, 18)
	for _, e := range entries {
		if len(e.ID) != len(oidTCB)+1 || !e.ID[:len(oidTCB)].Equal(oidTCB) {
			continue // not ours; Intel may add fields
		}
		n := e.ID[len(oidTCB)]
		if seen[n] {
			return fmt.Errorf("dcap: PCK certificate: SGX extension: TCB: %s appears twice", e.ID)
		}
		seen[n] = true
		switch {
		case n >= 1 && n <= 17:
			var svn int
			if rest, err := asn1.Unmarshal(e.Value.FullBytes, &svn); err != nil || len(rest) != 0 {
				return fmt.Errorf("dcap: PCK certificate: SGX extension: TCB: %s: not an INTEGER", e.ID)
			}
			limit := 255 // component SVNs are bytes
			if n == 17 {
				limit = 65535 // PCESVN is a u16
			}
			if svn < 0 || svn > limit {
				return fmt.Errorf("dcap: PCK certificate: SGX extension: TCB: %s: value %d outside 0..%d", e.ID, svn, limit)
			}
			if n == 17 {
				ext.PCESVN = svn
			} else {
				ext.TCBComponents[n-1] = svn
			}
		case n == 18:
			b, err := octets(e.Value, "TCB: CPUSVN", 16)
			if err != nil {
				return err
			}
			copy(ext.CPUSVN[:], b)
		}
	}
	for n := 1; n <= 18; n++ {
		if !seen[n] {
			return fmt.Errorf("dcap: PCK certificate: SGX extension: TCB: %s.%d not present", oidTCB, n)
		}
	}
	return nil
}

// Marshal encodes the extension value (the DER that goes into the certificate extension
// with OID OIDSGXExtensions), as Intel's PCK certificates carry it; a PPID of other than 16
// bytes is written as 16 zero bytes. attest/sim uses it to issue simulated PCK certificates.
func (ext *PCKExtensions) Marshal() ([]byte, error) {
	entry := func(oid asn1.ObjectIdentifier, v any) (asn1Entry, error) {
		der, err := asn1.Marshal(v)
		if err != nil {
			return asn1Entry{}, fmt.Errorf("dcap: PCK extensions: %s: %w", oid, err)
		}
		return asn1Entry{ID: oid, Value: asn1.RawValue{FullBytes: der}}, nil
	}
	sub := func(n int) asn1.ObjectIdentifier {
		return append(append(asn1.ObjectIdentifier(nil), oidTCB...), n)
	}
	tcb := make([]asn1Entry, 0, 18)
	for i, svn := range ext.TCBComponents {
		e, err := entry(sub(i+1), svn)
		if err != nil {
			return nil, err
		}
		tcb = append(tcb, e)
	}
	e, err := entry(sub(17), ext.PCESVN)
	if err != nil {
		return nil, err
	}
	tcb = append(tcb, e)
	if e, err = entry(sub(18), ext.CPUSVN[:]); err != nil {
		return nil, err
	}
	tcb = append(tcb, e)

	ppid := ext.PPID
	if len(ppid) != 16 {
		ppid = make([]byte, 16)
	}
	var top []asn1Entry
	for _, f := range []struct {
		oid asn1.ObjectIdentifier
		v   any
	}{
		{oidPPID, ppid},
		{oidTCB, tcb},
		{oidPCEID, ext.PCEID[:]},
		{oidFMSPC, ext.FMSPC[:]},
		{oidSGXType, asn1.Enumerated(0)}, // 0: Standard
	} {
		e, err := entry(f.oid, f.v)
		if err != nil {
			return nil, err
		}
		top = append(top, e)
	}
	der, err := asn1.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("dcap: PCK extensions: %w", err)
	}
	return der, nil
}
