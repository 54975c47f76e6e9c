package session_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "B_2": "beta", "EMPTY": ""}
	tests := []struct {
		in, want string
	}{
		{in: "x: $A", want: "x: alpha"},
		{in: "x: ${A}y", want: "x: alphay"},
		{in: "$A$B_2", want: "alphabeta"},
		{in: "$A.$B_2/$EMPTY.", want: "alpha.beta/."},
		{in: "content: $$SCONE::A$$", want: "content: $$SCONE::A$$"},
		{in: "$$SCONE::x.crt$$$A", want: "$$SCONE::x.crt$$alpha"},
		{in: "cost: 5$ or $5 or $-", want: "cost: 5$ or $5 or $-"},
		{in: "end$", want: "end$"},
		{in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := session.Expand([]byte(tt.in), vars)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
}

func TestExpandErrors(t *testing.T) {
	_, err := session.Expand([]byte("name: $NAME\nx: ok\ny: ${MISSING} $A\nz: ${bad-name}\n"), map[string]string{"A": "a"})
	require.Error(t, err)
	assert.Equal(t, []session.Problem{
		{Line: 1, Msg: "undefined variable $NAME"},
		{Line: 3, Msg: "undefined variable $MISSING"},
		{Line: 4, Msg: `malformed variable near "${bad-name}\n": want ${NAME}`},
	}, problemsOf(t, err))
	assert.Equal(t, `session: 3 problems: line 1: undefined variable $NAME; line 3: undefined variable $MISSING; `+
		`line 4: malformed variable near "${bad-name}\n": want ${NAME}`, err.Error())

	_, err = session.Expand([]byte("x: ${UNCLOSED"), nil)
	require.ErrorContains(t, err, `line 1: malformed variable near "${UNCLOSED": want ${NAME}`)
}
