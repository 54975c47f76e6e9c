//go:build race

package resource_test

// The race detector turns off the allocator's tiny-object packing and pads small objects: what
// a decode allocates is then up to an eighth more than the budget counts.
const raceEnabled = true
