package sim

import (
	"encoding/asn1"
	"fmt"
	"math"
)

// OIDSGXExtensions is Intel's SGX extension of PCK certificates (Intel SGX PCK Certificate and
// Certificate Revocation List Profile Specification, 1.3).
var OIDSGXExtensions = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}

// sgxOID returns OIDSGXExtensions with arcs appended.
func sgxOID(arcs ...int) asn1.ObjectIdentifier {
	oid := make(asn1.ObjectIdentifier, 0, len(OIDSGXExtensions)+len(arcs))
	oid = append(oid, OIDSGXExtensions...)
	return append(oid, arcs...)
}

// SGX types of the PCK extension (OID ...13.1.5).
const (
	sgxTypeStandard = 0
	sgxTypeScalable = 1
)

// sgxEntry is one SEQUENCE { OBJECT IDENTIFIER, value } of the SGX extension.
type sgxEntry struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// pckExtension is the content of the SGX extension that a verifier uses. It is encoded as
// Intel's PCK certificates do, for a scalable platform:
//
//	SEQUENCE {
//	  { ...13.1.1 PPID OCTET STRING(16) }
//	  { ...13.1.2 TCB SEQUENCE { { ...2.1 .. 2.16 INTEGER }, { ...2.17 PCESVN INTEGER },
//	                              { ...2.18 CPUSVN OCTET STRING(16) } } }
//	  { ...13.1.3 PCE-ID OCTET STRING(2) }
//	  { ...13.1.4 FMSPC OCTET STRING(6) }
//	  { ...13.1.5 SGX Type ENUMERATED }
//	  { ...13.1.6 PlatformInstanceID OCTET STRING(16) }
//	  { ...13.1.7 Configuration SEQUENCE { { ...7.1 dynamicPlatform BOOLEAN },
//	                                        { ...7.2 cachedKeys BOOLEAN },
//	                                        { ...7.3 SMTEnabled BOOLEAN } } }
//	}
type pckExtension struct {
	PPID               [16]byte
	CPUSVN             [16]byte // the 16 SGX TCB components
	PCESVN             uint16
	PCEID              [2]byte
	FMSPC              [6]byte
	PlatformInstanceID [16]byte
	SMTEnabled         bool
}

func rawOf(v any) (asn1.RawValue, error) {
	b, err := asn1.Marshal(v)
	if err != nil {
		return asn1.RawValue{}, fmt.Errorf("sim: encode SGX extension value: %w", err)
	}
	return asn1.RawValue{FullBytes: b}, nil
}

// marshal encodes the extension value (the DER inside the extension's OCTET STRING).
func (e *pckExtension) marshal() ([]byte, error) {
	type item struct {
		oid asn1.ObjectIdentifier
		v   any
	}
	build := func(items []item) ([]sgxEntry, error) {
		out := make([]sgxEntry, 0, len(items))
		for _, it := range items {
			rv, err := rawOf(it.v)
			if err != nil {
				return nil, err
			}
			out = append(out, sgxEntry{ID: it.oid, Value: rv})
		}
		return out, nil
	}

	tcbItems := make([]item, 0, 18)
	for i, svn := range e.CPUSVN {
		tcbItems = append(tcbItems, item{sgxOID(2, i+1), int(svn)})
	}
	tcbItems = append(tcbItems, item{sgxOID(2, 17), int(e.PCESVN)}, item{sgxOID(2, 18), e.CPUSVN[:]})
	tcb, err := build(tcbItems)
	if err != nil {
		return nil, err
	}
	config, err := build([]item{
		{sgxOID(7, 1), false},
		{sgxOID(7, 2), false},
		{sgxOID(7, 3), e.SMTEnabled},
	})
	if err != nil {
		return nil, err
	}
	top, err := build([]item{
		{sgxOID(1), e.PPID[:]},
		{sgxOID(2), tcb},
		{sgxOID(3), e.PCEID[:]},
		{sgxOID(4), e.FMSPC[:]},
		{sgxOID(5), asn1.Enumerated(sgxTypeScalable)},
		{sgxOID(6), e.PlatformInstanceID[:]},
		{sgxOID(7), config},
	})
	if err != nil {
		return nil, err
	}
	der, err := asn1.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("sim: encode SGX extension: %w", err)
	}
	return der, nil
}

func parseEntries(der []byte, what string) ([]sgxEntry, error) {
	var entries []sgxEntry
	rest, err := asn1.Unmarshal(der, &entries)
	if err != nil {
		return nil, fmt.Errorf("sim: SGX extension %s: %w", what, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("sim: SGX extension %s: %d trailing bytes", what, len(rest))
	}
	return entries, nil
}

func fixedOctets(dst []byte, v asn1.RawValue, what string) error {
	var b []byte
	if rest, err := asn1.Unmarshal(v.FullBytes, &b); err != nil || len(rest) != 0 {
		return fmt.Errorf("sim: SGX extension %s: not an OCTET STRING", what)
	}
	if len(b) != len(dst) {
		return fmt.Errorf("sim: SGX extension %s: got %d bytes, want %d", what, len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

func asn1Int(v asn1.RawValue, what string) (int, error) {
	var n int
	if rest, err := asn1.Unmarshal(v.FullBytes, &n); err != nil || len(rest) != 0 {
		return 0, fmt.Errorf("sim: SGX extension %s: not an INTEGER", what)
	}
	return n, nil
}

func svn8(v asn1.RawValue, what string) (uint8, error) {
	n, err := asn1Int(v, what)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > math.MaxUint8 {
		return 0, fmt.Errorf("sim: SGX extension %s: %d out of range 0..255", what, n)
	}
	return uint8(n), nil
}

func svn16(v asn1.RawValue, what string) (uint16, error) {
	n, err := asn1Int(v, what)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > math.MaxUint16 {
		return 0, fmt.Errorf("sim: SGX extension %s: %d out of range 0..65535", what, n)
	}
	return uint16(n), nil
}

// parsePCKExtension decodes the SGX extension value. PPID, TCB, PCE-ID and FMSPC are required;
// the CPUSVN octet string must agree with the 16 component integers.
func parsePCKExtension(der []byte) (*pckExtension, error) {
	top, err := parseEntries(der, "value")
	if err != nil {
		return nil, err
	}
	var e pckExtension
	seen := map[string]bool{}
	for _, ent := range top {
		switch {
		case ent.ID.Equal(sgxOID(1)):
			err = fixedOctets(e.PPID[:], ent.Value, "PPID")
			seen["PPID"] = true
		case ent.ID.Equal(sgxOID(2)):
			err = e.parseTCB(ent.Value)
			seen["TCB"] = true
		case ent.ID.Equal(sgxOID(3)):
			err = fixedOctets(e.PCEID[:], ent.Value, "PCE-ID")
			seen["PCE-ID"] = true
		case ent.ID.Equal(sgxOID(4)):
			err = fixedOctets(e.FMSPC[:], ent.Value, "FMSPC")
			seen["FMSPC"] = true
		case ent.ID.Equal(sgxOID(6)):
			err = fixedOctets(e.PlatformInstanceID[:], ent.Value, "PlatformInstanceID")
		case ent.ID.Equal(sgxOID(7)):
			err = e.parseConfig(ent.Value)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, name := range []string{"PPID", "TCB", "PCE-ID", "FMSPC"} {
		if !seen[name] {
			return nil, fmt.Errorf("sim: SGX extension: %s missing", name)
		}
	}
	return &e, nil
}

func (e *pckExtension) parseTCB(v asn1.RawValue) error {
	entries, err := parseEntries(v.FullBytes, "TCB")
	if err != nil {
		return err
	}
	var comps [16]byte
	have := 0
	var cpusvn [16]byte
	haveCPUSVN, havePCESVN := false, false
	for _, ent := range entries {
		if len(ent.ID) != len(OIDSGXExtensions)+2 || !ent.ID[:len(OIDSGXExtensions)+1].Equal(sgxOID(2)) {
			continue
		}
		switch arc := ent.ID[len(ent.ID)-1]; {
		case arc >= 1 && arc <= 16:
			n, err := svn8(ent.Value, fmt.Sprintf("TCB component %d", arc))
			if err != nil {
				return err
			}
			comps[arc-1] = n
			have |= 1 << (arc - 1)
		case arc == 17:
			n, err := svn16(ent.Value, "PCESVN")
			if err != nil {
				return err
			}
			e.PCESVN = n
			havePCESVN = true
		case arc == 18:
			if err := fixedOctets(cpusvn[:], ent.Value, "CPUSVN"); err != nil {
				return err
			}
			haveCPUSVN = true
		}
	}
	if have != 0xffff || !havePCESVN {
		return fmt.Errorf("sim: SGX extension TCB: components or PCESVN missing")
	}
	e.CPUSVN = comps
	if haveCPUSVN && cpusvn != e.CPUSVN {
		return fmt.Errorf("sim: SGX extension TCB: CPUSVN %x disagrees with components %x", cpusvn, e.CPUSVN)
	}
	return nil
}

func (e *pckExtension) parseConfig(v asn1.RawValue) error {
	entries, err := parseEntries(v.FullBytes, "Configuration")
	if err != nil {
		return err
	}
	for _, ent := range entries {
		if ent.ID.Equal(sgxOID(7, 3)) {
			if rest, err := asn1.Unmarshal(ent.Value.FullBytes, &e.SMTEnabled); err != nil || len(rest) != 0 {
				return fmt.Errorf("sim: SGX extension SMTEnabled: not a BOOLEAN")
			}
		}
	}
	return nil
}
