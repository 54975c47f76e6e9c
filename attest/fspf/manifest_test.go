package fspf

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseManifest(t *testing.T) {
	head := manifestHeader + "\nkey-check " + strings.Repeat("0", 64) + "\n"
	h := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		in      string
		entries int
		wantErr string
	}{
		{name: "valid", in: head + "d 0755 app\nd 0700 app-data\nf 0644 12 " + h + " app/main.py\nf 0755 0 " + h + " run me.sh\n", entries: 4},
		{name: "no entries", in: head, entries: 0},
		{name: "empty", in: "", wantErr: "empty or not terminated"},
		{name: "header only", in: manifestHeader + "\n", wantErr: "line 2"},
		{name: "wrong header", in: "attestmesh-fspf v2\n", wantErr: "line 1"},
		{name: "no final newline", in: strings.TrimSuffix(head, "\n"), wantErr: "not terminated"},
		{name: "uppercase key check", in: manifestHeader + "\nkey-check " + strings.Repeat("A", 64) + "\n", wantErr: "lowercase hex"},
		{name: "mode too big", in: head + "d 1755 app\n", wantErr: "line 3: mode"},
		{name: "mode short", in: head + "d 755 app\n", wantErr: "mode"},
		{name: "unknown kind", in: head + "l 0755 app\n", wantErr: "want d or f"},
		{name: "out of order", in: head + "d 0755 b\nd 0755 a\n", wantErr: "line 4: \"a\" is out of order"},
		{name: "duplicate", in: head + "d 0755 a\nd 0755 a\n", wantErr: "repeated"},
		{name: "missing parent", in: head + "f 0644 1 " + h + " a/b\n", wantErr: "parent directory"},
		{name: "parent is a file", in: head + "f 0644 1 " + h + " a\nf 0644 1 " + h + " a/b\n", wantErr: "parent directory"},
		{name: "dot dot", in: head + "f 0644 1 " + h + " ../etc/passwd\n", wantErr: "clean relative path"},
		{name: "absolute", in: head + "f 0644 1 " + h + " /etc/passwd\n", wantErr: "clean relative path"},
		{name: "dot", in: head + "d 0755 .\n", wantErr: "clean relative path"},
		{name: "leading zero size", in: head + "f 0644 01 " + h + " a\n", wantErr: "without leading zeros"},
		{name: "negative size", in: head + "f 0644 -1 " + h + " a\n", wantErr: "size"},
		{name: "huge size", in: head + "f 0644 99999999999999 " + h + " a\n", wantErr: "more than"},
		{name: "short hash", in: head + "f 0644 1 abcd a\n", wantErr: "hash"},
		{name: "reserved name", in: head + "f 0644 1 " + h + " .fspf\n", wantErr: "reserved"},
		{name: "control character", in: head + "f 0644 1 " + h + " a\tb\n", wantErr: "control character"},
		{name: "empty line", in: head + "\n", wantErr: "line 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseManifest([]byte(tt.in))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.True(t, strings.HasPrefix(err.Error(), "fspf: manifest: "), err.Error())
				return
			}
			require.NoError(t, err)
			assert.Len(t, m.entries, tt.entries)
			assert.Equal(t, tt.in, string(m.marshal()), "canonical round trip")
		})
	}
}
