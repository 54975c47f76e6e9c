package sim

import (
	"crypto/rand"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	sharedOnce     sync.Once
	sharedPlatform *Platform
	sharedErr      error
)

// testPlatform returns one up-to-date platform shared by the tests that only read it.
func testPlatform(tb testing.TB) *Platform {
	tb.Helper()
	sharedOnce.Do(func() { sharedPlatform, sharedErr = NewPlatform(rand.Reader, PlatformOptions{}) })
	require.NoError(tb, sharedErr)
	return sharedPlatform
}

func newPlatform(tb testing.TB, opts PlatformOptions) *Platform {
	tb.Helper()
	p, err := NewPlatform(rand.Reader, opts)
	require.NoError(tb, err)
	return p
}
