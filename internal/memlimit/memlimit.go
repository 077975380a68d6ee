// Package memlimit holds the one rule ferry's footprint-dependent
// defaults share: a process with a Go memory limit in force (GOMEMLIMIT,
// runtime/debug.SetMemoryLimit, replica.Options.MemoryLimit) asked for a
// small footprint, one without did not. The store's mapped-file budget
// and trim interval, the premade-document pass and crdt's C-memory pacer
// follow it (storage writes the check out: it imports nothing of ferry).
package memlimit

import (
	"math"
	"runtime/debug"
)

// InForce reports whether a Go memory limit is in force now (any limit
// other than the runtime's default, math.MaxInt64).
func InForce() bool {
	return debug.SetMemoryLimit(-1) != math.MaxInt64
}
