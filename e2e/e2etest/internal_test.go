package e2etest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPrerequisiteFailsUnderCI(t *testing.T) {
	t.Setenv(CIEnv, "")
	fail, msg := prerequisiteVerdict("needs redis-server")
	assert.False(t, fail, "a developer's machine skips")
	assert.Equal(t, "needs redis-server", msg)

	t.Setenv(CIEnv, "1")
	fail, msg = prerequisiteVerdict("needs redis-server")
	assert.True(t, fail, "CI fails")
	assert.Contains(t, msg, "needs redis-server (ATTESTMESH_CI is set")
}
