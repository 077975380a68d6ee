//go:build linux

package storage

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

const trimSupported = true

// madvPageout is MADV_PAGEOUT (Linux 5.4): reclaim the range's pages,
// keeping their contents (written back first if dirty).
const madvPageout = 21

// madvRandom is MADV_RANDOM: a page fault in the range reads that page
// only, not the kernel's read-around window (up to 128 KiB).
const madvRandom = 1

// trimmer pages out a store's mapped files (see trim.go). It remembers
// where each table's index starts, so only trimLoop's goroutine uses it.
type trimmer struct {
	dir string
	// indexAt is the offset of each table file's index, by path and
	// inode: tables are immutable, and a reused name has a new inode.
	indexAt map[mappedFile]int64
	// random is where each value-log mapping was advised MADV_RANDOM
	// (advise), by file: advised again if mapped elsewhere.
	random map[mappedFile]uintptr
	pages  []byte // pagemap entries read by resident
}

type mappedFile struct {
	path  string
	inode uint64
}

func newTrimmer(dir string) *trimmer {
	return &trimmer{dir: dir, indexAt: map[mappedFile]int64{}, random: map[mappedFile]uintptr{}}
}

// trim pages out the store's mapped files while their resident pages
// (beyond the table indexes it keeps) come to more than budget bytes
// (negative: page everything out), and returns the bytes it asked the
// kernel to page out. It reads /proc/self/maps for the mappings of *.sst,
// *.vlog and *.mem files in the store's directory and /proc/self/pagemap
// for which of their pages are resident (resident), and pages out the
// mappings holding the most first until at most half the budget stays: a
// store over its budget pays for one page-out per half budget it reads,
// not one per interval. Only the store's own pages count: the process's
// RssFile also holds the executable, other stores' and other libraries'
// mapped files, a budget the store could never get under, so it paged
// everything out every interval (/proc/self/smaps would give the same per
// mapping, but the kernel walks every mapping of the process to write it:
// 21 of 115 CPU-seconds of the 100,000-record sync under load). Each
// table's index (block offsets and Bloom filter, at the end of the file)
// stays resident: every read of the table consults it, and paging it out
// turned each point read into several page faults (measured: an initial
// sync of 100,000 records spent twice the CPU with the whole tables paged
// out every 250 ms). A table whose tail does not parse yet (Badger still
// writing it) is left alone this time. Errors are ignored: the trim is
// advice.
func (t *trimmer) trim(budget int64) int64 {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	ms := mappedRanges(f, t.dir)
	f.Close()
	t.adviseRandom(ms)
	pm, err := os.Open("/proc/self/pagemap")
	if err == nil {
		defer pm.Close()
	}
	type victim struct {
		lo, hi uintptr
		bytes  int64 // resident bytes this page-out can take
	}
	var vs []victim
	var total int64
	live := map[mappedFile]bool{}
	for _, m := range ms {
		lo, hi := m.start, m.end
		if filepath.Ext(m.path) == ".sst" && !m.deleted {
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
		if hi <= lo {
			continue
		}
		held := t.resident(pm, lo, hi)
		if held > 0 {
			vs = append(vs, victim{lo, hi, held})
			total += held
		}
	}
	for k := range t.indexAt {
		if !live[k] {
			delete(t.indexAt, k)
		}
	}
	if budget >= 0 && total <= budget {
		return 0
	}
	goal := max(budget/2, 0)
	slices.SortFunc(vs, func(a, b victim) int { return cmp.Compare(b.bytes, a.bytes) })
	var out int64
	for _, v := range vs {
		if budget >= 0 && total <= goal {
			break
		}
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, v.lo, v.hi-v.lo, madvPageout)
		total -= v.bytes
		out += v.bytes
	}
	return out
}

// adviseRandom advises MADV_RANDOM on the store's value-log mappings it
// has not advised yet (advise). A value is read from the value log where
// it was written, and most reads are not in write order (a Load, a scan in
// key order): with the kernel's read-around each such read faulted in up
// to 128 KiB around a ~1.4 KB value, so a reader in key order filled the
// budget within a few hundred records and held far more between two trims
// (measured at 100,000 records, peak RSS: a reopen and scan of every
// record 145 MiB, 112 of them value-log and table pages, against 93 [30+63]
// with this advice; docs/storage.md "Where values live"). A reader in
// write order (ReadOrder) reads each page once either way. Like the
// page-out, the advice only ever concerns readahead: a stale range costs
// nothing but that.
func (t *trimmer) adviseRandom(ms []mapping) {
	live := map[mappedFile]bool{}
	for _, m := range ms {
		if filepath.Ext(m.path) != ".vlog" {
			continue
		}
		key := mappedFile{m.path, m.inode}
		live[key] = true
		if at, ok := t.random[key]; ok && at == m.start {
			continue
		}
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, madvRandom)
		t.random[key] = m.start
	}
	for k := range t.random {
		if !live[k] {
			delete(t.random, k)
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

// mapping is one line of /proc/self/maps naming a store file.
type mapping struct {
	start, end uintptr
	offset     int64 // file offset of start
	inode      uint64
	path       string
	// deleted: the file was deleted while mapped. A deleted table is no
	// longer in the LSM tree: only iterators opened before its
	// compaction read it, so it is paged out whole, index too.
	deleted bool
}

// resident returns how many bytes of [lo, hi) are in the process's
// resident set: the "present" bit (63) of each page's /proc/self/pagemap
// entry (readable by the process itself). Where pagemap cannot be read
// (pm nil or a failed read: a kernel without it, a sandbox, a masked
// /proc) it counts the pages mincore(2) reports in the page cache, which
// is close for these files (Badger reads and writes them only through
// its maps) though it also counts pages read ahead and not touched yet;
// counting the whole range instead would keep the store over its budget,
// and paging everything out at every interval, however little it holds.
func (t *trimmer) resident(pm *os.File, lo, hi uintptr) int64 {
	page := uintptr(os.Getpagesize())
	n := int((hi - lo + page - 1) / page)
	if cap(t.pages) < 8*n {
		t.pages = make([]byte, 8*n)
	}
	buf := t.pages[:8*n]
	if pm != nil {
		if _, err := pm.ReadAt(buf, int64(lo/page)*8); err == nil {
			var in int64
			for i := 0; i < n; i++ {
				if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
					in++
				}
			}
			return in * int64(page)
		}
	}
	vec := buf[:n]
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, lo, hi-lo, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0 // the range is gone (ENOMEM): nothing to page out
	}
	var in int64
	for _, v := range vec {
		in += int64(v & 1)
	}
	return in * int64(page)
}

// mappedRanges reads /proc/self/maps lines ("start-end perms offset dev
// inode path") and returns each mapping of a *.sst, *.vlog or *.mem file
// directly in dir (an absolute path without symbolic links, as the
// kernel names files there).
func mappedRanges(maps io.Reader, dir string) []mapping {
	clean := filepath.Clean(dir)
	var out []mapping
	sc := bufio.NewScanner(maps)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 6 {
			continue
		}
		path := string(bytes.Join(fields[5:], []byte(" ")))
		// A file deleted while mapped (a table a compaction replaced,
		// still open for an iterator that began before it) is named
		// "path (deleted)": it is the store's all the same.
		path, deleted := strings.CutSuffix(path, " (deleted)")
		if filepath.Dir(path) != clean {
			continue
		}
		if ext := filepath.Ext(path); ext != ".sst" && ext != ".vlog" && ext != ".mem" {
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
		out = append(out, mapping{start: uintptr(a), end: uintptr(b), offset: off, inode: ino, path: path, deleted: deleted})
	}
	return out
}
