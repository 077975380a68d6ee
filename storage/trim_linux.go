//go:build linux

package storage

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

const trimSupported = true

// madvPageout is MADV_PAGEOUT (Linux 5.4): reclaim the range's pages,
// keeping their contents (written back first if dirty).
const madvPageout = 21

// trimMapped pages out the mappings of dir's tables and value-log files
// (see trim.go). Errors are ignored: the trim is advice.
func trimMapped(dir string) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	for _, r := range mappedRanges(f, dir) {
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, r[0], r[1]-r[0], madvPageout)
	}
}

// mappedRanges reads /proc/self/maps lines ("start-end perms offset dev
// inode path") and returns the [start, end) of each mapping of a *.sst
// or *.vlog file directly in dir (an absolute path without symbolic
// links, as the kernel names files there).
func mappedRanges(maps interface{ Read([]byte) (int, error) }, dir string) [][2]uintptr {
	clean := filepath.Clean(dir)
	var out [][2]uintptr
	sc := bufio.NewScanner(maps)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		fields := bytes.Fields(line)
		if len(fields) < 6 {
			continue
		}
		path := string(bytes.Join(fields[5:], []byte(" ")))
		if filepath.Dir(path) != clean {
			continue
		}
		if ext := filepath.Ext(path); ext != ".sst" && ext != ".vlog" {
			continue
		}
		lo, hi, ok := bytes.Cut(fields[0], []byte("-"))
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(string(lo), 16, 64)
		b, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || b <= a {
			continue
		}
		out = append(out, [2]uintptr{uintptr(a), uintptr(b)})
	}
	return out
}
