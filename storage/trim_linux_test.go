//go:build linux

package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestMappedRangesPicksTheStoresFiles(t *testing.T) {
	maps := `00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/ferry
7f1000000000-7f1000200000 rw-s 00000000 08:02 11 /data/st/000001.sst
7f1000200000-7f1000400000 rw-s 00001000 08:02 12 /data/st/000002.vlog
7f1000400000-7f1000600000 rw-s 00000000 08:02 13 /data/st/00003.mem
7f1000600000-7f1000800000 rw-s 00000000 08:02 14 /data/other/000001.sst
7f1000800000-7f1000a00000 rw-s 00000000 08:02 15 /data/st/sub/000009.sst
7f1000a00000-7f1000c00000 rw-s 00000000 08:02 16 /data/st/000004.sst (deleted)
7f1000a00000-7f1000c00000 rw-s 00000000 08:02 16 /data/st/DISCARD
7f1000c00000-7f1000e00000 rw-p 00000000 00:00 0
bad line
7f1000e00000-7f1000d00000 rw-s 00000000 08:02 17 /data/st/000005.sst
`
	got := mappedRanges(strings.NewReader(maps), "/data/st/")
	want := []mapping{
		{start: 0x7f1000000000, end: 0x7f1000200000, offset: 0, inode: 11, path: "/data/st/000001.sst"},
		{start: 0x7f1000200000, end: 0x7f1000400000, offset: 0x1000, inode: 12, path: "/data/st/000002.vlog"},
		{start: 0x7f1000400000, end: 0x7f1000600000, offset: 0, inode: 13, path: "/data/st/00003.mem"},
		{start: 0x7f1000a00000, end: 0x7f1000c00000, offset: 0, inode: 16, path: "/data/st/000004.sst", deleted: true},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ranges %+v, want %+v", got, want)
	}
}

// tableTail appends a Badger table's tail to data: an index of idxLen
// bytes, its length, a checksum of sumLen bytes and the checksum's length.
func tableTail(idxLen, sumLen int) []byte {
	var out []byte
	out = append(out, bytes.Repeat([]byte{0xAB}, idxLen)...)
	out = binary.BigEndian.AppendUint32(out, uint32(idxLen))
	out = append(out, bytes.Repeat([]byte{0xCD}, sumLen)...)
	return binary.BigEndian.AppendUint32(out, uint32(sumLen))
}

func TestTableIndexStart(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
		at   int64
		ok   bool
	}{
		{"table", append(make([]byte, 5000), tableTail(300, 10)...), 5000, true},
		{"index only", tableTail(300, 10), 0, true},
		{"being written (zeros)", make([]byte, 8192), 0, false},
		{"checksum longer than the file", append(make([]byte, 10), 0, 0, 0x10, 0), 0, false},
		{"index longer than the file", binary.BigEndian.AppendUint32(append(make([]byte, 16), tableTail(0, 4)[4:]...), 4), 0, false},
		{"empty index", append(make([]byte, 100), tableTail(0, 10)...), 0, false},
		{"tiny", []byte{1, 2, 3}, 0, false},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".sst")
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		at, ok := tableIndexStart(path)
		if ok != tc.ok || ok && at != tc.at {
			t.Errorf("%s: index at %d, %v; want %d, %v", tc.name, at, ok, tc.at, tc.ok)
		}
	}
	if _, ok := tableIndexStart(filepath.Join(dir, "missing.sst")); ok {
		t.Error("a missing file has an index")
	}
}

// residentPages reports, per page of m, whether it is in the process's
// resident set: the "present" bit (63) of its /proc/self/pagemap entry.
// (mincore would not do: it reports the page cache, which keeps a paged
// out file page until it is reclaimed.)
func residentPages(t *testing.T, m []byte) []bool {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	page := os.Getpagesize()
	n := (len(m) + page - 1) / page
	buf := make([]byte, 8*n)
	if _, err := f.ReadAt(buf, int64(uintptr(unsafe.Pointer(&m[0]))/uintptr(page))*8); err != nil {
		t.Skip("pagemap:", err)
	}
	out := make([]bool, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0
	}
	return out
}

// mapTable creates a table file of size bytes in dir whose tail is a
// table's tail with an index of idxLen bytes (none: all zeros, a table
// being written), maps it shared, and writes a byte into every page
// before the tail.
func mapTable(t *testing.T, dir, name string, size, idxLen int) []byte {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(m) })
	for i := 0; i < size; i += 4096 {
		m[i] = byte(i / 4096)
	}
	if idxLen > 0 {
		tail := tableTail(idxLen, 10)
		copy(m[size-len(tail):], tail)
	}
	return m
}

// TestTrimMappedPagesOutTouchedTablePages: the data pages of a mapped
// table the process has read and written leave its resident set when
// the store trims, its index pages stay, a table whose tail does not
// parse yet (being written) is left alone, and no contents change.
func TestTrimMappedPagesOutTouchedTablePages(t *testing.T) {
	dir := t.TempDir()
	const size = 4 << 20
	const idxLen = 1<<20 - 100 // the index starts 100 bytes into page 768 (less the tail)
	m := mapTable(t, dir, "000001.sst", size, idxLen)
	writing := mapTable(t, dir, "000002.sst", 1<<20, 0)
	page := os.Getpagesize()
	idxPage := (size - len(tableTail(idxLen, 10))) / page
	before := residentPages(t, m)
	n := 0
	for _, r := range before {
		if r {
			n++
		}
	}
	if n < len(before)/2 {
		t.Fatalf("%d of %d pages resident after touching them all", n, len(before))
	}
	newTrimmer(dir).trim(-1)
	after := residentPages(t, m)
	out := 0
	for i, r := range after[:idxPage] {
		if !r && before[i] {
			out++
		}
	}
	if out < idxPage*3/4 {
		t.Fatalf("%d of %d data pages paged out: want them out", out, idxPage)
	}
	for i := idxPage; i < len(after); i++ {
		if before[i] && !after[i] {
			t.Fatalf("index page %d (index from page %d) paged out", i, idxPage)
		}
	}
	for i, r := range residentPages(t, writing) {
		if !r {
			t.Fatalf("page %d of a table being written paged out", i)
		}
	}
	tail := tableTail(idxLen, 10)
	for i := 0; i < size-len(tail); i += 4096 {
		if m[i] != byte(i/4096) {
			t.Fatalf("page %d: %d after trimming, want %d", i/4096, m[i], byte(i/4096))
		}
	}
	if !bytes.Equal(m[size-len(tail):], tail) {
		t.Fatal("the table's tail changed")
	}
}

// TestTrimKeepsWhatFitsTheBudget: a store whose resident mapped pages
// fit its budget is not trimmed; one above it pages out its largest
// mappings first until at most half the budget stays, and its pages are
// counted from /proc/self/pagemap (this store's files only).
func TestTrimKeepsWhatFitsTheBudget(t *testing.T) {
	dir := t.TempDir()
	page := os.Getpagesize()
	small := mapTable(t, dir, "000001.sst", 1<<20, 4096-100)
	large := mapTable(t, dir, "000002.sst", 4<<20, 4096-100)
	wal := mapTable(t, dir, "000003.mem", 2<<20, 0)
	count := func(m []byte) int {
		n := 0
		for _, r := range residentPages(t, m) {
			if r {
				n++
			}
		}
		return n
	}
	if count(small)+count(large)+count(wal) < (7<<20)/page*3/4 {
		t.Skip("the test's pages are not resident after writing them")
	}
	tr := newTrimmer(dir)
	if out := tr.trim(16 << 20); out != 0 {
		t.Fatalf("7 MiB resident under a 16 MiB budget: paged out %d bytes", out)
	}
	if n := count(large); n < (4<<20)/page*3/4 {
		t.Fatalf("only %d pages of the large table resident after a trim under the budget", n)
	}
	// 7 MiB over a 6 MiB budget: the 4 MiB table goes (7 - 4 = 3 <= 6/2);
	// the 2 MiB log and the 1 MiB table stay.
	out := tr.trim(6 << 20)
	if out < 3<<20 || out > 4<<20 {
		t.Fatalf("paged out %d bytes, want the large table's ~4 MiB", out)
	}
	if n := count(large); n > (4<<20)/page/4 {
		t.Fatalf("%d pages of the large table still resident", n)
	}
	if n := count(wal); n < (2<<20)/page*3/4 {
		t.Fatalf("the log lost pages (%d resident) though the large table was enough", n)
	}
	if n := count(small); n < (1<<20)/page*3/4 {
		t.Fatalf("the small table lost pages (%d resident) though the large table was enough", n)
	}
	// Everything (budget -1): the log and the small table too.
	tr.trim(-1)
	if n := count(wal) + count(small); n > (3<<20)/page/4 {
		t.Fatalf("%d pages of the log and small table resident after trimming everything", n)
	}
}

// TestTrimAdvisesValueLogRandom: a trim advises MADV_RANDOM on the store's
// value-log mappings (a page fault there reads that page, not the
// kernel's read-around window), and on no table: the kernel shows the
// advice as the "rr" flag of the mapping in /proc/self/smaps.
func TestTrimAdvisesValueLogRandom(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := testOpts()
	o.Sizes.MappedTrimInterval = -1 // no trim loop: the test trims
	s, err := Create(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	doc := bytes.Repeat([]byte{'v'}, 4<<10) // over ValueThreshold: to the value log
	for i := range 20 {
		if _, err := s.Write(ctx, Batch{Records: []RecordWrite{{Collection: "c", ID: fmt.Sprint(i), Changes: doc}}}); err != nil {
			t.Fatal(err)
		}
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	flags := func() map[string]string { // mapped file name -> VmFlags
		b, err := os.ReadFile("/proc/self/smaps")
		if err != nil {
			t.Skipf("no /proc/self/smaps: %v", err)
		}
		out := map[string]string{}
		cur := ""
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 5 && strings.Count(f[0], "-") == 1 && len(f[1]) == 4: // a mapping's first line
				cur = ""
				if p := strings.Join(f[5:], " "); len(f) >= 6 && filepath.Dir(p) == real {
					cur = filepath.Base(p)
				}
			case cur != "" && len(f) > 0 && f[0] == "VmFlags:":
				out[cur] = strings.Join(f[1:], " ")
			}
		}
		return out
	}
	hasRR := func(fl string) bool { return slices.Contains(strings.Fields(fl), "rr") }
	before := flags()
	vlogs := 0
	for name, fl := range before {
		if filepath.Ext(name) == ".vlog" {
			vlogs++
			if hasRR(fl) {
				t.Fatalf("%s advised random before any trim: %s", name, fl)
			}
		}
	}
	if vlogs == 0 {
		t.Fatalf("no value-log mapping among %v", before)
	}
	newTrimmer(real).trim(1 << 40) // a budget nothing reaches: advice only
	for name, fl := range flags() {
		if got, want := hasRR(fl), filepath.Ext(name) == ".vlog"; got != want {
			t.Fatalf("%s: random-read advice %v, want %v (VmFlags %s)", name, got, want, fl)
		}
	}
}

// TestTrimPagesOutADeletedTable: a table a compaction replaced while an
// iterator still held it stays mapped as "path (deleted)"; the trim pages
// it out whole, index too (it is no longer in the LSM tree). Before, such
// tables were never trimmed: long scans and sync senders held 40-87 MiB
// of them at their peaks (FERRY_MEM_FILEDIAG).
func TestTrimPagesOutADeletedTable(t *testing.T) {
	dir := t.TempDir()
	m := mapTable(t, dir, "000001.sst", 4<<20, 4096-100)
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "000001.sst")); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	in := 0
	for _, r := range residentPages(t, m) {
		if r {
			in++
		}
	}
	if in < len(m)/4096/2 {
		t.Fatalf("%d pages resident before the trim", in)
	}
	newTrimmer(real).trim(-1)
	in = 0
	for _, r := range residentPages(t, m) {
		if r {
			in++
		}
	}
	if in > 4 {
		t.Fatalf("%d pages of a deleted table resident after the trim, want none", in)
	}
}

// TestOpenTrimPagesOutWhileBadgerOpens: the trim that runs while Badger
// opens a store (openTrim) pages out the store's mapped files on its own
// short interval, before the store's trim loop exists, and hands its
// trimmer over once. Before, a reopened store of 100,000 records held
// 36-58 MiB of value-log pages 0.3-0.4 s after open (Badger reads the
// last value-log file whole at open), against a 16 MiB budget.
func TestOpenTrimPagesOutWhileBadgerOpens(t *testing.T) {
	dir := t.TempDir()
	const size = 2 << 20
	m := mapTable(t, dir, "000001.vlog", size, 0)
	page := os.Getpagesize()
	held := func() int {
		n := 0
		for _, r := range residentPages(t, m) {
			if r {
				n++
			}
		}
		return n
	}
	if n := held(); n < size/page/2 {
		t.Fatalf("%d of %d pages resident after touching them all", n, size/page)
	}
	if beginOpenTrim(dir, false, Sizes{MappedTrimInterval: -1}) != nil || beginOpenTrim(dir, true, DefaultSizes()) != nil {
		t.Fatal("an open trim where the store trims nothing")
	}
	z := DefaultSizes()
	z.MappedBudget = 64 << 10
	z.MappedTrimInterval = time.Hour // the open's interval is its own
	ot := beginOpenTrim(dir, false, z)
	deadline := time.Now().Add(10 * time.Second)
	for held() > int(z.MappedBudget)/page {
		if time.Now().After(deadline) {
			t.Fatalf("%d pages still resident after 10 s of open trims, budget %d", held(), z.MappedBudget/int64(page))
		}
		runtime.Gosched()
	}
	tr := ot.end()
	if tr == nil || ot.end() != nil {
		t.Fatal("end: want the trimmer once, then nil")
	}
	for i := 0; i < size; i += page {
		if m[i] != byte(i/page) {
			t.Fatalf("page %d: %d after trimming, want %d", i/page, m[i], byte(i/page))
		}
	}
}
