//go:build linux

package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

const trimSupported = true

// madvPageout is MADV_PAGEOUT (Linux 5.4): reclaim the range's pages,
// keeping their contents (written back first if dirty).
const madvPageout = 21

// trimmer pages out a store's mapped files (see trim.go). It remembers
// where each table's index starts, so only trimLoop's goroutine uses it.
type trimmer struct {
	dir string
	// indexAt is the offset of each table file's index, by path and
	// inode: tables are immutable, and a reused name has a new inode.
	indexAt map[mappedFile]int64
}

type mappedFile struct {
	path  string
	inode uint64
}

func newTrimmer(dir string) *trimmer {
	return &trimmer{dir: dir, indexAt: map[mappedFile]int64{}}
}

// trim pages out the mappings of the store's tables and value-log files,
// except each table's index (block offsets and Bloom filter, at the end
// of the file): every read of a table consults it, and paging it out
// would turn each read into several page faults (measured: an initial
// sync of 100,000 records spent twice the CPU with the whole tables
// paged out every 250 ms). A table whose tail does not parse yet (Badger
// still writing it) is left alone this time. Errors are ignored: the
// trim is advice.
func (t *trimmer) trim() {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	live := map[mappedFile]bool{}
	for _, m := range mappedRanges(f, t.dir) {
		lo, hi := m.start, m.end
		if filepath.Ext(m.path) == ".sst" {
			key := mappedFile{m.path, m.inode}
			live[key] = true
			at, ok := t.indexAt[key]
			if !ok {
				if at, ok = tableIndexStart(m.path); !ok {
					continue
				}
				t.indexAt[key] = at
			}
			// The mapping starts at file offset m.offset; keep the pages
			// from the one holding the index's first byte on.
			keep := at - m.offset
			if keep <= 0 {
				continue
			}
			if end := lo + uintptr(keep)&^uintptr(os.Getpagesize()-1); end < hi {
				hi = end
			}
		}
		if hi > lo {
			_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, lo, hi-lo, madvPageout)
		}
	}
	for k := range t.indexAt {
		if !live[k] {
			delete(t.indexAt, k)
		}
	}
}

// tableIndexStart reads where a Badger table file's index begins. The
// file ends with the index, its length (4 bytes, big-endian), a checksum
// and the checksum's length (4 bytes, big-endian) (badger/v4 table
// builder, "Finish"). ok is false when the tail is not plausible, as
// while Badger is still writing the file.
func tableIndexStart(path string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, false
	}
	size := st.Size()
	var b [4]byte
	if size < 8 {
		return 0, false
	}
	if _, err := f.ReadAt(b[:], size-4); err != nil {
		return 0, false
	}
	sumLen := int64(binary.BigEndian.Uint32(b[:]))
	if sumLen == 0 || sumLen > 64 || size < 8+sumLen {
		return 0, false
	}
	if _, err := f.ReadAt(b[:], size-8-sumLen); err != nil {
		return 0, false
	}
	idxLen := int64(binary.BigEndian.Uint32(b[:]))
	at := size - 8 - sumLen - idxLen
	if idxLen == 0 || at < 0 {
		return 0, false
	}
	return at, true
}

// fileResident returns the process's file-backed resident bytes (the
// RssFile line of /proc/self/status), or -1 when it cannot be read (then
// every trim runs).
func fileResident() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	return parseRssFile(b)
}

// parseRssFile finds "RssFile:   N kB" in a /proc/PID/status text and
// returns N KiB in bytes, or -1.
func parseRssFile(status []byte) int64 {
	for _, line := range bytes.Split(status, []byte("\n")) {
		v, ok := bytes.CutPrefix(line, []byte("RssFile:"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		if len(f) != 2 || string(f[1]) != "kB" {
			return -1
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || n < 0 {
			return -1
		}
		return n << 10
	}
	return -1
}

// mapping is one line of /proc/self/maps naming a store file.
type mapping struct {
	start, end uintptr
	offset     int64 // file offset of start
	inode      uint64
	path       string
}

// mappedRanges reads /proc/self/maps lines ("start-end perms offset dev
// inode path") and returns each mapping of a *.sst or *.vlog file
// directly in dir (an absolute path without symbolic links, as the
// kernel names files there).
func mappedRanges(maps interface{ Read([]byte) (int, error) }, dir string) []mapping {
	clean := filepath.Clean(dir)
	var out []mapping
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
		off, err3 := strconv.ParseInt(string(fields[2]), 16, 64)
		ino, err4 := strconv.ParseUint(string(fields[4]), 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || b <= a || off < 0 {
			continue
		}
		out = append(out, mapping{start: uintptr(a), end: uintptr(b), offset: off, inode: ino, path: path})
	}
	return out
}
