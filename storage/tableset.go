package storage

import (
	"crypto/hmac"
	"crypto/sha256"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4/table"
)

// The verified-table set. Open checks every table Badger will open (see
// precheckTables), and a full check reads every byte of every table: most
// of a cold open of a large store. Badger never changes a table after
// writing it, so a table checked once need not be checked again while its
// file is the same file: the set remembers, for each table checked in
// full, its file's identity (id, size, inode, device, modification and
// change times), MAC'd with a key derived from the store's master key, in
// tableSetFile. At the next Open a table whose identity is in the set gets
// only the cheap footer check; any other table (new, rewritten, copied,
// touched, or the set file itself damaged, foreign or written under another
// key epoch) gets the full check, and the set is rewritten.
//
// What this gives up: a bit that rots on the medium without any write (the
// file's times and inode unchanged) in a table checked at an earlier Open
// is not found at Open any more; Badger's own block checksums (verified on
// every block read) still refuse the block on read. Any write to a table
// file changes its change time (ctime), which user programs cannot set back.
//
// Stamps are recorded only for tables whose times are older than the check
// by more than tableSetSlack, so a table written in the same clock tick as
// (or after) the check cannot carry a stamp equal to the one its earlier
// content had ("racily clean", as git calls it).

const (
	tableSetFile    = "ferry.tables"
	tableSetVersion = 1
	labelTables     = "ferry/storage/v1 tables"
	tableSetSlack   = 2 * time.Second
	// maxTableSet bounds the entries read from the file (a store has
	// thousands of tables at most: 2 MiB each at the default sizes).
	maxTableSet = 1 << 20
	stampSize   = 8 * 7
)

// tableStamp identifies one version of a table file.
type tableStamp struct {
	id, size, ino, dev uint64
	mtime, ctime       int64 // ns since the epoch
}

// tableSet is the verified set, keyed by table id.
type tableSet map[uint64]tableStamp

// tableSetKey derives the set's MAC key from the master key of epoch.
func tableSetKey(master []byte, epoch uint32) ([]byte, error) {
	return deriveKey(master, labelTables, epoch)
}

// encodeTableSet returns the file contents for set under key:
//
//	u8 version | uv count | count x (u64 id, size, ino, dev, i64 mtime, ctime, u64 0),
//	ascending ids | HMAC-SHA256 of everything before it
func encodeTableSet(set tableSet, key []byte) []byte {
	w := wbuf{b: make([]byte, 0, 16+len(set)*stampSize+sha256.Size)}
	w.u8(tableSetVersion)
	w.uv(uint64(len(set)))
	for _, id := range slices.Sorted(maps.Keys(set)) {
		s := set[id]
		for _, v := range []uint64{s.id, s.size, s.ino, s.dev, uint64(s.mtime), uint64(s.ctime), 0} {
			w.i64(int64(v))
		}
	}
	m := hmac.New(sha256.New, key)
	m.Write(w.b)
	return m.Sum(w.b)
}

// decodeTableSet returns the set in b, or nil if b is not a set written
// under key (damaged, truncated, foreign, another epoch's): then every
// table is checked in full.
func decodeTableSet(b, key []byte) tableSet {
	if len(b) < sha256.Size {
		return nil
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), sum) {
		return nil
	}
	return decodeTableSetBody(body)
}

// decodeTableSetBody decodes the set's entries (after the MAC check).
func decodeTableSetBody(body []byte) tableSet {
	r := rbuf{b: body}
	if r.u8() != tableSetVersion {
		return nil
	}
	n := r.count(maxTableSet, stampSize)
	set := make(tableSet, n)
	ids := make([]uint64, 0, n)
	for range n {
		var v [7]uint64
		for i := range v {
			v[i] = uint64(r.i64())
		}
		if v[6] != 0 {
			return nil
		}
		s := tableStamp{id: v[0], size: v[1], ino: v[2], dev: v[3], mtime: int64(v[4]), ctime: int64(v[5])}
		set[s.id] = s
		ids = append(ids, s.id)
	}
	if !r.done() || len(set) != n || !slices.IsSorted(ids) {
		return nil
	}
	return set
}

// readTableSet reads the set of dir; nil when absent or not valid under key.
func readTableSet(dir string, key []byte) tableSet {
	path := filepath.Join(dir, tableSetFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Size() > 16+maxTableSet*stampSize+sha256.Size {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return decodeTableSet(b, key)
}

// recordTables writes the verified-table set when a writable store has
// closed Badger: every table the manifest references is either one this
// session's Open checked (in full, or unchanged since an earlier check) or
// one this process's Badger wrote and synced since, so the next Open need
// not read them again. Before, the first Open after any session that wrote
// checked in full every table the session's flushes and compactions had
// made: the common start of an application. Tables whose times are not
// settled (written within tableSetSlack of now, such as those Close's own
// flush wrote) are left out and checked in full at the next Open, as are
// any the set cannot identify. Failures are ignored: without the file the
// next Open checks every table.
func (s *Store) recordTables() {
	st := s.state.Load()
	if st == nil {
		return
	}
	key, err := tableSetKey(st.cur.master, st.cur.epoch)
	if err != nil {
		return
	}
	defer wipe(key)
	live := manifestTables(s.dir)
	if live == nil {
		return
	}
	now := tableCheckNow()
	set := make(tableSet, len(live))
	for id := range live {
		fi, err := os.Stat(filepath.Join(s.dir, table.IDToFilename(id)))
		if err != nil {
			continue
		}
		if stamp, ok := stampOf(id, fi); ok && stamp.settled(now) {
			set[id] = stamp
		}
	}
	writeTableSet(s.dir, set, key)
}

// writeTableSet replaces dir's set file (write, then rename). A failure
// is ignored: without the file the next Open checks every table in full.
func writeTableSet(dir string, set tableSet, key []byte) {
	tmp := filepath.Join(dir, tableSetFile+".tmp")
	if err := os.WriteFile(tmp, encodeTableSet(set, key), 0o600); err != nil {
		os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, filepath.Join(dir, tableSetFile)); err != nil {
		os.Remove(tmp)
	}
}

// stampOf returns the identity of a table file, ok false where the
// platform does not give inode and change time (then the table is always
// checked in full).
func stampOf(id uint64, fi fs.FileInfo) (tableStamp, bool) {
	ino, dev, ctime, ok := fileIDs(fi)
	if !ok {
		return tableStamp{}, false
	}
	return tableStamp{id: id, size: uint64(fi.Size()), ino: ino, dev: dev,
		mtime: fi.ModTime().UnixNano(), ctime: ctime}, true
}

// settled reports whether s's times are older than the check that began
// at start by more than tableSetSlack.
func (s tableStamp) settled(start time.Time) bool {
	limit := start.Add(-tableSetSlack).UnixNano()
	return s.mtime < limit && s.ctime < limit
}
