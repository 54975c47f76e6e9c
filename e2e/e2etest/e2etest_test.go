package e2etest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/attestmesh/attestmesh/e2e/e2etest"
)

func TestSample(t *testing.T) {
	text := "# HELP x_total x\nx_total{a=\"b\"} 3\nx_total{a=\"c\"} 4 1700000000\nx_total 7\n"
	assert.InDelta(t, 3, e2etest.Sample(text, `x_total{a="b"}`), 0)
	assert.InDelta(t, 4, e2etest.Sample(text, `x_total{a="c"}`), 0, "a timestamp after the value")
	assert.InDelta(t, 7, e2etest.Sample(text, "x_total"), 0)
	assert.InDelta(t, 0, e2etest.Sample(text, `x_total{a="d"}`), 0, "absent: 0")
	assert.InDelta(t, 0, e2etest.Sample("x_total \n", "x_total"), 0, "no value: 0")
}
