package session

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxDocumentSize is the largest session document Parse accepts.
const MaxDocumentSize = 1 << 20

// Parse decodes one session document (YAML). It refuses unknown keys, duplicate keys, wrong
// types, anchors and aliases, and more than one document, naming the field path and line of
// each problem (all of them, as an *Error). It fills the defaults: access policy CREATOR for
// read and update, attestation mode hardware. Parse does not check meaning: call Validate.
func Parse(data []byte) (*Session, error) {
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("session: document is %d bytes, at most %d accepted", len(data), MaxDocumentSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("session: empty document")
		}
		return nil, fmt.Errorf("session: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("session: more than one YAML document; give one session per document")
	}
	s := &Session{lines: map[string]int{}, docHash: Hash(data)}
	d := &decoder{s: s, p: &problems{s: s}}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if d.kind(doc, "", yaml.MappingNode) {
		d.session(doc)
	}
	if err := d.p.err(); err != nil {
		return nil, err
	}
	if len(s.AccessPolicy.Read) == 0 {
		s.AccessPolicy.Read = []string{PolicyCreator}
	}
	if len(s.AccessPolicy.Update) == 0 {
		s.AccessPolicy.Update = []string{PolicyCreator}
	}
	if len(s.AccessPolicy.CreateSessions) == 0 {
		s.AccessPolicy.CreateSessions = []string{PolicyCreator}
	}
	if s.Security.Attestation.Mode == "" {
		s.Security.Attestation.Mode = ModeHardware
	}
	return s, nil
}

// decoder walks yaml.v3 nodes into a Session, recording lines and problems.
type decoder struct {
	s *Session
	p *problems
}

// field decodes the value of one key.
type field func(path string, v *yaml.Node)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

var kindNames = map[yaml.Kind]string{
	yaml.DocumentNode: "a document",
	yaml.SequenceNode: "a list",
	yaml.MappingNode:  "a mapping",
	yaml.ScalarNode:   "a scalar",
	yaml.AliasNode:    "an alias",
}

func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return fmt.Sprintf("%s %q", strings.TrimPrefix(n.ShortTag(), "!!"), truncate(n.Value, 40))
	}
	if s, ok := kindNames[n.Kind]; ok {
		return s
	}
	return "an unknown node"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// kind records the line of path and reports whether n has the wanted kind. A null scalar is
// "absent": it reports false without a problem.
func (d *decoder) kind(n *yaml.Node, path string, want yaml.Kind) bool {
	d.s.lines[path] = n.Line
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		d.p.add(path, "YAML anchors and aliases are not supported")
		return false
	}
	if isNull(n) {
		return false
	}
	if n.Kind != want {
		d.p.add(path, "want %s, got %s", kindNames[want], describe(n))
		return false
	}
	return true
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// mapping decodes a mapping with a fixed set of keys.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]field) {
	if !d.kind(n, path, yaml.MappingNode) {
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.s.lines[path] = k.Line
			d.p.add(path, "a key must be a scalar, got %s", describe(k))
			continue
		}
		fp := join(path, k.Value)
		if seen[k.Value] {
			d.s.lines[fp] = k.Line
			d.p.add(fp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			d.s.lines[fp] = k.Line
			d.p.add(fp, "unknown key %q (known: %s)", truncate(k.Value, 40), quoteList(slices.Sorted(maps.Keys(fields))))
			continue
		}
		f(fp, v)
	}
}

// seq calls item for every element of a list.
func (d *decoder) seq(n *yaml.Node, path string, item func(i int, path string, v *yaml.Node)) {
	if !d.kind(n, path, yaml.SequenceNode) {
		return
	}
	for i, v := range n.Content {
		ip := index(path, i)
		d.s.lines[ip] = v.Line
		item(i, ip, v)
	}
}

func (d *decoder) str(dst *string) field {
	return func(path string, v *yaml.Node) {
		if d.kind(v, path, yaml.ScalarNode) {
			*dst = v.Value
		}
	}
}

func (d *decoder) hex(dst *string) field {
	return func(path string, v *yaml.Node) {
		if d.kind(v, path, yaml.ScalarNode) {
			*dst = strings.ToLower(v.Value)
		}
	}
}

func (d *decoder) strList(dst *[]string, lower bool) field {
	return func(path string, v *yaml.Node) {
		d.seq(v, path, func(_ int, ip string, e *yaml.Node) {
			if isNull(e) {
				d.p.add(ip, "want a string, got null")
				return
			}
			if d.kind(e, ip, yaml.ScalarNode) {
				if lower {
					*dst = append(*dst, strings.ToLower(e.Value))
				} else {
					*dst = append(*dst, e.Value)
				}
			}
		})
	}
}

func (d *decoder) strMap(dst *map[string]string) field {
	return func(path string, v *yaml.Node) {
		if !d.kind(v, path, yaml.MappingNode) {
			return
		}
		m := map[string]string{}
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, e := v.Content[i], v.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				d.p.add(path, "a key must be a scalar, got %s", describe(k))
				continue
			}
			ep := join(path, k.Value)
			if _, dup := m[k.Value]; dup {
				d.s.lines[ep] = k.Line
				d.p.add(ep, "duplicate key")
				continue
			}
			m[k.Value] = ""
			if d.kind(e, ep, yaml.ScalarNode) {
				m[k.Value] = e.Value
			}
		}
		*dst = m
	}
}

func (d *decoder) integer(dst *int, lo, hi int64) field {
	return func(path string, v *yaml.Node) {
		if !d.kind(v, path, yaml.ScalarNode) {
			return
		}
		n, err := strconv.ParseInt(v.Value, 10, 64)
		if err != nil || v.ShortTag() != "!!int" {
			d.p.add(path, "want an integer, got %s", describe(v))
			return
		}
		if n < lo || n > hi {
			d.p.add(path, "%d is out of range [%d, %d]", n, lo, hi)
			return
		}
		*dst = int(n)
	}
}

func (d *decoder) uint16(dst *uint16) field {
	return func(path string, v *yaml.Node) {
		var n int
		d.integer(&n, 0, math.MaxUint16)(path, v)
		*dst = uint16(n) //nolint:gosec // range checked by integer
	}
}

func (d *decoder) boolean(dst *bool) field {
	return func(path string, v *yaml.Node) {
		if !d.kind(v, path, yaml.ScalarNode) {
			return
		}
		var b bool
		if v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
			d.p.add(path, "want true or false, got %s", describe(v))
			return
		}
		*dst = b
	}
}

func (d *decoder) session(n *yaml.Node) {
	s := d.s
	d.mapping(n, "", map[string]field{
		"name":        d.str(&s.Name),
		"version":     d.str(&s.Version),
		"predecessor": d.hex(&s.Predecessor),
		"access_policy": func(path string, v *yaml.Node) {
			d.mapping(v, path, map[string]field{
				"read":            d.strList(&s.AccessPolicy.Read, false),
				"update":          d.strList(&s.AccessPolicy.Update, false),
				"create_sessions": d.strList(&s.AccessPolicy.CreateSessions, false),
			})
		},
		"services": func(path string, v *yaml.Node) {
			d.seq(v, path, func(_ int, ip string, e *yaml.Node) {
				s.Services = append(s.Services, Service{})
				d.service(e, ip, &s.Services[len(s.Services)-1])
			})
		},
		"images": func(path string, v *yaml.Node) {
			d.seq(v, path, func(_ int, ip string, e *yaml.Node) {
				s.Images = append(s.Images, Image{})
				d.image(e, ip, &s.Images[len(s.Images)-1])
			})
		},
		"secrets": func(path string, v *yaml.Node) {
			d.seq(v, path, func(_ int, ip string, e *yaml.Node) {
				s.Secrets = append(s.Secrets, Secret{})
				d.secret(e, ip, &s.Secrets[len(s.Secrets)-1])
			})
		},
		"security": func(path string, v *yaml.Node) {
			d.mapping(v, path, map[string]field{
				"attestation": func(path string, v *yaml.Node) {
					a := &s.Security.Attestation
					d.mapping(v, path, map[string]field{
						"mode": func(path string, v *yaml.Node) {
							var m string
							d.str(&m)(path, v)
							a.Mode = Mode(m)
						},
						"tolerate": func(path string, v *yaml.Node) {
							var ts []string
							d.strList(&ts, false)(path, v)
							for _, t := range ts {
								a.Tolerate = append(a.Tolerate, Tolerance(t))
							}
						},
						"ignore_advisories": d.strList(&a.IgnoreAdvisories, false),
					})
				},
			})
		},
	})
}

func (d *decoder) service(n *yaml.Node, path string, svc *Service) {
	d.mapping(n, path, map[string]field{
		"name":       d.str(&svc.Name),
		"image_name": d.str(&svc.ImageName),
		"mrenclaves": d.strList(&svc.MREnclaves, true),
		"attestation": func(path string, v *yaml.Node) {
			d.seq(v, path, func(_ int, ip string, e *yaml.Node) {
				svc.Attestation = append(svc.Attestation, AttestationVariant{})
				av := &svc.Attestation[len(svc.Attestation)-1]
				d.mapping(e, ip, map[string]field{
					"mrenclave": d.strList(&av.MREnclaves, true),
					"signer": func(path string, v *yaml.Node) {
						av.Signer = &Signer{}
						d.mapping(v, path, map[string]field{
							"mrsigner":  d.hex(&av.Signer.MRSigner),
							"isvprodid": d.uint16(&av.Signer.ISVProdID),
							"isvsvn":    d.uint16(&av.Signer.ISVSVN),
						})
					},
				})
			})
		},
		"command":     d.str(&svc.Command),
		"environment": d.strMap(&svc.Environment),
		"pwd":         d.str(&svc.Pwd),
		"fspf_path":   d.str(&svc.FSPFPath),
		"fspf_key":    d.hex(&svc.FSPFKey),
		"fspf_tag":    d.hex(&svc.FSPFTag),
		"sidecar": func(path string, v *yaml.Node) {
			svc.Sidecar = &SidecarPolicy{}
			d.mapping(v, path, map[string]field{
				"mrenclaves": d.strList(&svc.Sidecar.MREnclaves, true),
			})
		},
	})
}

func (d *decoder) image(n *yaml.Node, path string, img *Image) {
	d.mapping(n, path, map[string]field{
		"name": d.str(&img.Name),
		"injection_files": func(path string, v *yaml.Node) {
			d.seq(v, path, func(_ int, ip string, e *yaml.Node) {
				img.InjectionFiles = append(img.InjectionFiles, InjectionFile{})
				f := &img.InjectionFiles[len(img.InjectionFiles)-1]
				d.mapping(e, ip, map[string]field{
					"path":    d.str(&f.Path),
					"content": d.str(&f.Content),
				})
			})
		},
	})
}

func (d *decoder) secret(n *yaml.Node, path string, sec *Secret) {
	d.mapping(n, path, map[string]field{
		"name": d.str(&sec.Name),
		"kind": func(path string, v *yaml.Node) {
			var k string
			d.str(&k)(path, v)
			sec.Kind = Kind(k)
		},
		"size":  d.integer(&sec.Size, 1, maxSecretSize),
		"value": d.str(&sec.Value),
		"algorithm": func(path string, v *yaml.Node) {
			var a string
			d.str(&a)(path, v)
			sec.Algorithm = Algorithm(a)
		},
		"private_key": d.str(&sec.PrivateKey),
		"issuer":      d.str(&sec.Issuer),
		"common_name": d.str(&sec.CommonName),
		"dns":         d.strList(&sec.DNS, false),
		"valid_for":   d.str(&sec.ValidFor),
		"export": func(path string, v *yaml.Node) {
			d.seq(v, path, func(_ int, ip string, e *yaml.Node) {
				sec.Export = append(sec.Export, Export{})
				x := &sec.Export[len(sec.Export)-1]
				d.mapping(e, ip, map[string]field{"session": d.str(&x.Session), "session_hash": d.hex(&x.SessionHash)})
			})
		},
		"export_public": d.boolean(&sec.ExportPublic),
		"import": func(path string, v *yaml.Node) {
			sec.Import = &Import{}
			d.mapping(v, path, map[string]field{
				"session": d.str(&sec.Import.Session),
				"secret":  d.str(&sec.Import.Secret),
			})
		},
	})
}

// maxSecretSize bounds the size of generated ascii and binary secrets.
const maxSecretSize = 64 << 10
