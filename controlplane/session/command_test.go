package session_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  string
	}{
		{in: "", want: nil},
		{in: "  python3   /app/x.py\t-v\n", want: []string{"python3", "/app/x.py", "-v"}},
		{in: `echo 'a b' "c d"`, want: []string{"echo", "a b", "c d"}},
		{in: `a'b c'"d"`, want: []string{"ab cd"}},
		{in: `echo '' ""`, want: []string{"echo", "", ""}},
		{in: `echo "say \"hi\" \\ \n"`, want: []string{"echo", `say "hi" \ \n`}},
		{in: `echo 'no \escape'`, want: []string{"echo", `no \escape`}},
		{in: `a\ b \$HOME`, want: []string{"a b", "$HOME"}},
		{in: `run $$SCONE::pw$$ "--key=$$SCONE::k:hex$$"`, want: []string{"run", "$$SCONE::pw$$", "--key=$$SCONE::k:hex$$"}},
		{in: `echo 'open`, err: "session: command: unterminated single quote"},
		{in: `echo "open`, err: "session: command: unterminated double quote"},
		{in: `echo "esc\"`, err: "session: command: unterminated double quote"},
		{in: `echo \`, err: "session: command: trailing backslash"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := session.SplitCommand(tt.in)
			if tt.err != "" {
				require.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
