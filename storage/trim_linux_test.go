//go:build linux

package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestMappedRangesPicksTheStoresTablesAndValueLogs(t *testing.T) {
	maps := `00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/ferry
7f1000000000-7f1000200000 rw-s 00000000 08:02 11 /data/st/000001.sst
7f1000200000-7f1000400000 rw-s 00000000 08:02 12 /data/st/000002.vlog
7f1000400000-7f1000600000 rw-s 00000000 08:02 13 /data/st/00003.mem
7f1000600000-7f1000800000 rw-s 00000000 08:02 14 /data/other/000001.sst
7f1000800000-7f1000a00000 rw-s 00000000 08:02 15 /data/st/sub/000009.sst
7f1000a00000-7f1000c00000 rw-s 00000000 08:02 16 /data/st/000004.sst (deleted)
7f1000c00000-7f1000e00000 rw-p 00000000 00:00 0
bad line
7f1000e00000-7f1000d00000 rw-s 00000000 08:02 17 /data/st/000005.sst
`
	got := mappedRanges(strings.NewReader(maps), "/data/st/")
	want := [][2]uintptr{{0x7f1000000000, 0x7f1000200000}, {0x7f1000200000, 0x7f1000400000}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ranges %x, want %x", got, want)
	}
}

// mappingRSS is the resident KiB of the mapping starting at addr
// (/proc/self/smaps).
func mappingRSS(t *testing.T, addr uintptr) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	prefix := strconv.FormatUint(uint64(addr), 16) + "-"
	sc := bufio.NewScanner(bytes.NewReader(b))
	in := false
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(strings.Fields(l)[0], "-") && !strings.HasSuffix(strings.Fields(l)[0], ":") {
			in = strings.HasPrefix(l, prefix)
			continue
		}
		if v, ok := strings.CutPrefix(l, "Rss:"); in && ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatalf("mapping %x not in smaps", addr)
	return 0
}

// TestTrimMappedPagesOutTouchedTablePages: the pages of a mapped table
// the process has read and written leave its resident set when the
// store trims, and their contents are unchanged.
func TestTrimMappedPagesOutTouchedTablePages(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "000001.sst"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 4 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	for i := 0; i < size; i += 4096 {
		m[i] = byte(i / 4096)
	}
	addr := uintptr(mappedRanges(mustMaps(t), dir)[0][0])
	before := mappingRSS(t, addr)
	if before < size/1024/2 {
		t.Fatalf("mapping holds %d KiB resident after touching %d KiB", before, size/1024)
	}
	trimMapped(dir)
	after := mappingRSS(t, addr)
	if after > before/4 {
		t.Fatalf("resident %d KiB before trimming, %d KiB after: want the pages out", before, after)
	}
	for i := 0; i < size; i += 4096 {
		if m[i] != byte(i/4096) {
			t.Fatalf("page %d: %d after trimming, want %d", i/4096, m[i], byte(i/4096))
		}
	}
}

func mustMaps(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
