package pbwire

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestWalk(t *testing.T) {
	tag := func(n protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, n, typ) }
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		want    []Field
		wantErr string // the error, all of it
	}{
		{name: "empty", in: nil},
		{name: "varint, fixed, bytes", in: cat(tag(1, protowire.VarintType), []byte{0x96, 0x01}, tag(2, protowire.Fixed32Type), []byte{1, 0, 0, 0},
			tag(3, protowire.Fixed64Type), []byte{2, 0, 0, 0, 0, 0, 0, 0}, tag(4, protowire.BytesType), []byte{2, 'h', 'i'}),
			want: []Field{{Num: 1, Type: protowire.VarintType, U: 150}, {Num: 2, Type: protowire.Fixed32Type, U: 1},
				{Num: 3, Type: protowire.Fixed64Type, U: 2}, {Num: 4, Type: protowire.BytesType, B: []byte("hi")}}},
		{name: "group skipped", in: cat(tag(5, protowire.StartGroupType), tag(1, protowire.VarintType), []byte{1}, tag(5, protowire.EndGroupType), tag(1, protowire.VarintType), []byte{7}),
			want: []Field{{Num: 1, Type: protowire.VarintType, U: 7}}},
		{name: "end group alone", in: tag(5, protowire.EndGroupType), wantErr: "pbwire: field 5: proto: mismatching end group marker"},
		{name: "unbalanced group", in: tag(5, protowire.StartGroupType), wantErr: "pbwire: field 5: unexpected EOF"},
		{name: "field 0", in: []byte{0x00, 0x01}, wantErr: "pbwire: proto: invalid field number"},
		{name: "field above the maximum", in: protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), wantErr: "pbwire: field number 536870912 out of range"},
		{name: "truncated bytes", in: cat(tag(1, protowire.BytesType), []byte{3, 'a'}), wantErr: "pbwire: field 1: unexpected EOF"},
		{name: "truncated varint", in: cat(tag(1, protowire.VarintType), []byte{0x80}), wantErr: "pbwire: field 1: unexpected EOF"},
		{name: "reserved wire type", in: []byte{0x0e}, wantErr: "pbwire: field 1: proto: cannot parse reserved wire type"},
		// Lengths and varints from the network: no length may reach past the input however it
		// converts to int, and a varint longer than 64 bits is an error, not a wrap-around.
		{name: "length 2^64-1", in: cat(tag(1, protowire.BytesType), protowire.AppendVarint(nil, math.MaxUint64), []byte("abc")), wantErr: "pbwire: field 1: unexpected EOF"},
		{name: "length 2^63 (negative as an int64)", in: cat(tag(1, protowire.BytesType), protowire.AppendVarint(nil, 1<<63), []byte("abc")), wantErr: "pbwire: field 1: unexpected EOF"},
		{name: "length one past the end", in: cat(tag(1, protowire.BytesType), []byte{4, 'a', 'b', 'c'}), wantErr: "pbwire: field 1: unexpected EOF"},
		{name: "varint of 11 bytes", in: cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), wantErr: "pbwire: field 1: proto: variable length integer overflow"},
		{name: "varint of 10 bytes above 2^64", in: cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 9), []byte{0x02}), wantErr: "pbwire: field 1: proto: variable length integer overflow"},
		{name: "tag above 2^32", in: protowire.AppendVarint(nil, 1<<35|uint64(protowire.VarintType)), wantErr: "pbwire: proto: invalid field number"},
		{name: "groups nested 100 deep skipped", in: cat(nestGroups(100), tag(1, protowire.VarintType), []byte{7}),
			want: []Field{{Num: 1, Type: protowire.VarintType, U: 7}}},
		// protowire's recursion limit (10000): a deeper group is an error, not a stack overflow.
		{name: "groups nested 20000 deep", in: nestGroups(20000), wantErr: "pbwire: field 5: proto: parse error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Field
			err := Walk(tt.in, func(f Field) error { got = append(got, f); return nil })
			if tt.wantErr != "" {
				require.Error(t, err)
				// protobuf-go writes the space after "proto:" as U+00A0 in some builds and as
				// U+0020 in others (internal/detrand: a hash of the binary), so that no one
				// relies on its error texts; compare with that space made plain.
				assert.Equal(t, tt.wantErr, strings.ReplaceAll(err.Error(), "proto:\u00a0", "proto: "))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// nestGroups returns n groups of field 5, each inside the previous.
func nestGroups(n int) []byte {
	var b []byte
	for range n {
		b = protowire.AppendTag(b, 5, protowire.StartGroupType)
	}
	for range n {
		b = protowire.AppendTag(b, 5, protowire.EndGroupType)
	}
	return b
}

// TestAppend: the encoders' output decodes with protobuf (a Struct of one string value).
func TestAppend(t *testing.T) {
	v := protowire.AppendTag(nil, 3, protowire.BytesType)
	v = protowire.AppendString(v, "x")
	e := AppendString(nil, 1, "k")
	e = AppendMessage(e, 2, v)
	b := AppendMessage(nil, 1, e)
	var s structpb.Struct
	require.NoError(t, proto.Unmarshal(b, &s))
	assert.Equal(t, "x", s.GetFields()["k"].GetStringValue())
	assert.Empty(t, AppendString(nil, 1, ""))
	assert.Empty(t, AppendVarint(nil, 1, 0))
	assert.Len(t, AppendRepeatedString(nil, 1, []string{"", ""}), 4)
}
