package replica

import (
	"runtime/debug"
	"sync"
)

// memLimitMu serialises applyMemoryLimit's read-then-set of the
// process's soft memory limit, so two replicas opening at once keep the
// lower of their limits.
var memLimitMu sync.Mutex

// applyMemoryLimit lowers the Go runtime's soft memory limit to limit
// bytes when that is lower than the limit in force (Options.MemoryLimit);
// zero or less changes nothing. It returns the limit in force afterwards.
func applyMemoryLimit(limit int64) int64 {
	memLimitMu.Lock()
	defer memLimitMu.Unlock()
	cur := debug.SetMemoryLimit(-1)
	if limit <= 0 || limit >= cur {
		return cur
	}
	debug.SetMemoryLimit(limit)
	return limit
}
