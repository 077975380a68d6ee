package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Damaged logs. Badger replays its write-ahead logs (*.mem) and the last
// value-log file (*.vlog) on open and stops, without an error, at the first
// entry it cannot read: everything after a flipped bit silently disappears,
// and a read-write open then truncates the file, destroying the evidence.
// After a crash a torn tail is normal (a last entry cut short, then zeros);
// an unreadable entry with valid entries after it is damage. checkLogs reads
// those files with its own decoder of Badger's log format, before Badger
// opens them, and refuses to open a damaged store with ErrCorrupt.
//
// Badger v4 log format (memtable.go, value.go, structs.go): a 20-byte file
// header (data-key id, base IV), then entries
//
//	meta u8 | userMeta u8 | uvarint klen | uvarint vlen | uvarint expiresAt |
//	key (klen, ends in an 8-byte version) | value (vlen) | crc32c (4, big endian)
//
// where the CRC (Castagnoli) covers header, key and value. Entries written
// by a transaction carry bitTxn and end with an entry carrying bitFinTxn
// whose value is the commit version in decimal; value-log entries carry
// neither.

const (
	logHeaderSize = 20 // Badger's vlogHeaderSize
	memExt        = ".mem"
	vlogExt       = ".vlog"
	maxKeyLen     = 1 << 16 // Badger refuses longer keys in a log
	bitTxn        = 1 << 6
	bitFinTxn     = 1 << 7
	// Meta bits Badger writes: delete, value pointer, discard earlier
	// versions, merge entry, txn, end of txn.
	knownMeta = 0x01 | 0x02 | 0x04 | 0x08 | bitTxn | bitFinTxn
	// maxInlineVal bounds a value stored in a write-ahead log: values of
	// 1 MiB or more go to the value log and leave a small pointer.
	maxInlineVal = 1<<20 + 64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// logEntry is one decoded entry; key and val alias the log bytes.
type logEntry struct {
	meta, userMeta byte
	expires        uint64
	key, val       []byte
	size           int // header + key + value + crc
}

// readStatus says why readLogEntry stopped.
type readStatus int

const (
	entryOK    readStatus = iota
	entryShort            // the log ends inside the entry
	entryBad              // lengths out of range, overflowing varint or CRC mismatch
)

// readLogEntry decodes the entry at off of b. A bad entry still reports
// its size when its header could be decoded (size > 0).
func readLogEntry(b []byte, off int) (e logEntry, st readStatus) {
	if off < 0 || off+2 > len(b) {
		return e, entryShort
	}
	e.meta, e.userMeta = b[off], b[off+1]
	p := off + 2
	var lens [3]uint64
	for i := range lens {
		v, n := binary.Uvarint(b[p:])
		switch {
		case n == 0:
			return e, entryShort
		case n < 0:
			return e, entryBad
		}
		lens[i] = v
		p += n
	}
	klen, vlen := lens[0], lens[1]
	e.expires = lens[2]
	if klen > maxKeyLen || vlen > math.MaxUint32 {
		return e, entryBad
	}
	hlen := p - off
	size := uint64(hlen) + klen + vlen + crc32.Size
	if size > uint64(len(b)-off) {
		return e, entryShort
	}
	e.size = int(size)
	end := off + e.size - crc32.Size
	e.key = b[p : p+int(klen)]
	e.val = b[p+int(klen) : end]
	if crc32.Checksum(b[off:end], castagnoli) != binary.BigEndian.Uint32(b[end:]) {
		return e, entryBad
	}
	return e, entryOK
}

// keyVersion is Badger's y.ParseTs.
func keyVersion(key []byte) uint64 {
	if len(key) <= 8 {
		return 0
	}
	return math.MaxUint64 - binary.BigEndian.Uint64(key[len(key)-8:])
}

// logScan is what scanLog found in one log.
type logScan struct {
	validEnd int  // end of the last entry Badger replays (what it keeps)
	stop     int  // offset of the first entry it does not read
	damaged  bool // a valid entry exists after stop: damage, not a torn tail
}

// scanLog walks b (a whole log file) as Badger's logFile.iterate does, then
// looks for a valid entry after the point where that walk stops. maxVal
// bounds the value length of an entry the search accepts.
func scanLog(b []byte, maxVal int) logScan {
	off := logHeaderSize
	r := logScan{validEnd: off, stop: off}
	if len(b) < logHeaderSize {
		r.validEnd, r.stop = len(b), len(b)
		return r
	}
	var lastCommit uint64
	for {
		e, st := readLogEntry(b, off)
		r.stop = off
		if st != entryOK || len(e.key) == 0 {
			r.damaged = validAfter(b, off, e, st, maxVal)
			return r
		}
		next := off + e.size
		switch {
		case e.meta&bitTxn != 0:
			ts := keyVersion(e.key)
			if lastCommit == 0 {
				lastCommit = ts
			}
			if lastCommit != ts {
				// A valid entry Badger drops: never left by a crash.
				r.damaged = true
				return r
			}
		case e.meta&bitFinTxn != 0:
			ts, err := strconv.ParseUint(string(e.val), 10, 64)
			if err != nil || lastCommit != ts {
				r.damaged = true
				return r
			}
			lastCommit = 0
			r.validEnd = next
		default:
			if lastCommit != 0 {
				r.damaged = true
				return r
			}
			r.validEnd = next
		}
		off = next
	}
}

// validAfter reports whether a valid entry starts after off, where the walk
// stopped on e (status st). First the damaged entry's own lengths are
// trusted (a flipped bit in a key, value or CRC leaves them intact); then
// every later offset up to the last non-zero byte is tried, keeping only
// headers that look like ferry's (known meta bits, no user meta, no expiry,
// a key of 9..65536 bytes, a value of at most maxVal bytes) before paying
// for a CRC. Zeros after the stop, the common torn tail, cost one pass of
// bytes.Equal. The CRC work is bounded; past the bound the log counts as
// damaged (refusing is recoverable, dropping entries is not).
func validAfter(b []byte, off int, e logEntry, st readStatus, maxVal int) bool {
	if st == entryBad && e.size > 0 {
		if _, st2 := readLogEntry(b, off+e.size); st2 == entryOK && plausible(b, off+e.size, maxVal) {
			return true
		}
	}
	last := lastNonZero(b)
	budget := 64*len(b) + 1<<20
	for o := off + 1; o <= last; o++ {
		if !plausible(b, o, maxVal) {
			continue
		}
		c, st := readLogEntry(b, o)
		budget -= c.size
		if st == entryOK {
			return true
		}
		if budget < 0 {
			return true
		}
	}
	return false
}

// plausible is the cheap header filter of validAfter.
func plausible(b []byte, o, maxVal int) bool {
	if o+5 > len(b) || b[o]&^knownMeta != 0 || b[o+1] != 0 {
		return false
	}
	klen, n := binary.Uvarint(b[o+2:])
	if n <= 0 || klen < 9 || klen > maxKeyLen {
		return false
	}
	p := o + 2 + n
	vlen, n := binary.Uvarint(b[p:])
	if n <= 0 || vlen > uint64(maxVal) {
		return false
	}
	p += n
	return p < len(b) && b[p] == 0 // expiresAt 0: ferry sets no TTL
}

// lastNonZero returns the index of the last non-zero byte of b, or -1.
func lastNonZero(b []byte) int {
	var zero [4096]byte
	end := len(b)
	for end > 0 {
		start := max(end-len(zero), 0)
		if !bytes.Equal(b[start:end], zero[:end-start]) {
			for i := end - 1; i >= start; i-- {
				if b[i] != 0 {
					return i
				}
			}
		}
		end = start
	}
	return -1
}

// checkLogs scans every write-ahead log and the newest value-log file of
// the store in dir. It returns, for each write-ahead log, the offset Badger
// will truncate it to (the end of its last complete transaction), or
// ErrCorrupt naming the damaged file and the remedy.
func checkLogs(dir string) (map[string]int64, error) {
	if err := checkManifest(dir); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("check logs: %w", err)
	}
	ends := map[string]int64{}
	var vlogs []string
	for _, de := range entries {
		name := de.Name()
		switch {
		case de.IsDir():
		case strings.HasSuffix(name, memExt):
			end, err := checkLogFile(dir, name, maxInlineVal)
			if err != nil {
				return nil, err
			}
			ends[name] = end
		case strings.HasSuffix(name, vlogExt):
			vlogs = append(vlogs, name)
		}
	}
	if len(vlogs) > 0 {
		// Badger reads (and truncates) only the newest value-log file on
		// open; damage in older ones is caught by value checksums on read.
		sort.Slice(vlogs, func(i, j int) bool { return logFid(vlogs[i]) < logFid(vlogs[j]) })
		if _, err := checkLogFile(dir, vlogs[len(vlogs)-1], math.MaxInt32); err != nil {
			return nil, err
		}
	}
	return ends, nil
}

func logFid(name string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSuffix(name, memExt), vlogExt), 10, 64)
	return n
}

// errDamagedLog is the message of a damaged log: what happened and what the
// user can do.
func errDamagedLog(name string, off int) error {
	return fmt.Errorf("log %s is damaged at offset %d and later entries would be lost; "+
		"restore from a backup (ferry import BACKUP) or sync from a peer into a new store: %w", name, off, ErrCorrupt)
}

func checkLogFile(dir, name string, maxVal int) (int64, error) {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("check log %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("check log %s: %w", name, err)
	}
	// Badger's logs are sparse files of twice their nominal size: read up
	// to the end of the last allocated extent, the rest is zeros.
	n := dataEnd(f, fi.Size())
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, fmt.Errorf("check log %s: %w", name, err)
	}
	r := scanLog(b, maxVal)
	if r.damaged {
		if locked(dir) {
			// Another process is writing this log: what we read may be
			// mid-write. Badger's lock error says what is wrong.
			return int64(r.validEnd), nil
		}
		return 0, errDamagedLog(name, r.stop)
	}
	return int64(r.validEnd), nil
}
