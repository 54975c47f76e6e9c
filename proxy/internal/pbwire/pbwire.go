// Package pbwire holds the few protobuf wire-format primitives the sidecar's
// hand-written xDS decoders (proxy/resource, proxy/ads) share, so that the
// sidecar build links no generated Envoy types. The decoders follow
// google.golang.org/protobuf's rules, which the differential tests check:
//
//   - a field whose wire type does not match its declaration is an unknown
//     field and is skipped (it does not clear a oneof);
//   - a singular scalar that appears twice: the last one wins;
//   - a singular message that appears twice: the occurrences are merged
//     (each decoder decodes into the same value: decode is "merge into");
//   - a oneof member replaces another member; the same message member merges;
//   - proto3 strings must be valid UTF-8, also in occurrences later replaced;
//   - tags with field number 0 or above 2^29-1, truncated values and
//     unbalanced groups are errors; unknown fields' values are skipped
//     without looking inside them, as protobuf does.
package pbwire

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field is one field of a message as it appears on the wire.
type Field struct {
	Num  protowire.Number
	Type protowire.Type
	// U is the value of a varint, fixed32 or fixed64 field.
	U uint64
	// B is the content of a length-delimited (bytes) field.
	B []byte
}

// Walk calls fn for every field of the encoded message b, in order. Groups
// (deprecated, never used by xDS) are skipped like unknown fields. fn may be
// nil: Walk then only checks that b is well formed, as protobuf checks the
// contents of a message field whose fields are all unknown to it.
func Walk(b []byte, fn func(Field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("pbwire: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("pbwire: field number %d out of range", num)
		}
		b = b[n:]
		f := Field{Num: num, Type: typ}
		switch typ {
		case protowire.VarintType:
			f.U, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.U = uint64(v)
		case protowire.Fixed64Type:
			f.U, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.B, n = protowire.ConsumeBytes(b)
		default: // groups, and an end group without its start (an error)
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("pbwire: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if n < 0 {
			return fmt.Errorf("pbwire: field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if fn != nil {
			if err := fn(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrUTF8 is the error of a string field that is not valid UTF-8.
var ErrUTF8 = errors.New("pbwire: string field is not valid UTF-8")

// IsVarint, IsBytes tell whether a field has the wire type its declaration
// needs; a field that has not is an unknown field.
func (f Field) IsVarint() bool { return f.Type == protowire.VarintType }

// IsBytes reports a length-delimited field (string, bytes, message).
func (f Field) IsBytes() bool { return f.Type == protowire.BytesType }

// String returns a string field's value; ok is false for another wire type
// (an unknown field: skip it).
func (f Field) String() (s string, ok bool, err error) {
	if !f.IsBytes() {
		return "", false, nil
	}
	if !utf8.Valid(f.B) {
		return "", true, fmt.Errorf("field %d: %w", f.Num, ErrUTF8)
	}
	return string(f.B), true, nil
}

// Bool, Uint32, Int32 and Int64 convert a varint as protobuf does
// (truncating to 32 bits; any non-zero value is true).
func (f Field) Bool() bool { return f.U != 0 }

// Uint32 is a uint32 field's value.
func (f Field) Uint32() uint32 { return uint32(f.U) } //nolint:gosec // G115: truncation is protobuf's rule

// Int32 is an int32 or enum field's value.
func (f Field) Int32() int32 { return int32(f.U) } //nolint:gosec // G115: truncation is protobuf's rule

// Int64 is an int64 field's value.
func (f Field) Int64() int64 { return int64(f.U) } //nolint:gosec // G115: two's complement is protobuf's rule

// AppendString appends a string field.
func AppendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// AppendRepeatedString appends one field per element, empty ones included.
func AppendRepeatedString(b []byte, num protowire.Number, ss []string) []byte {
	for _, s := range ss {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

// AppendMessage appends a message field holding the encoded message m.
func AppendMessage(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// AppendVarint appends a varint field unless v is 0.
func AppendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}
