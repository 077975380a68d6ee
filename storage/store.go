package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Store is an encrypted record store over Badger. It is safe for concurrent
// use. No mutex is held across Badger I/O except where ordering requires it:
// assigning change-feed sequence numbers and handing the transaction to
// Badger's commit queue (not the fsync), and key-state transitions.
type Store struct {
	db    *badger.DB
	dir   string
	inMem bool
	now   func() time.Time

	// readOnly: Badger was opened read-only because less than reserve
	// bytes were free; writes fail with ErrNoSpace until a write finds
	// enough space and reopens it read-write (tryWritable). Changed only
	// while no operation is in flight.
	readOnly  atomic.Bool
	bopts     Options // sizes and sync for reopening Badger (no secrets)
	reserve   int64   // free bytes kept on the file system (Reserve)
	closeRes  int64   // free bytes Close needs (closeReserve)
	baseTable int64   // BaseTableSize

	trimDone sync.WaitGroup // trimLoop (trim.go); Close waits for it
	trimStop chan struct{}  // closed (stopTrim) once Badger is closed: trimLoop returns
	trimOnce sync.Once

	gcDone       sync.WaitGroup // gcLoop (vloggc.go); Close waits for it before Badger's Close
	vlogFileSize int64          // ValueLogFileSize: what one GC rewrite may move
	// valueThreshold is Sizes.ValueThreshold: a value of at least this
	// size is in the value log, so deleting it leaves garbage there.
	valueThreshold int64
	gcStats

	// transMu serialises key-state transitions: header writes (passphrase
	// change, rotation start and finish) and publishing a new keyState.
	transMu sync.Mutex
	hdr     *header // under transMu
	kek     []byte  // under transMu; kept to wrap the next key on rotation
	rotMu   sync.Mutex

	state atomic.Pointer[keyState]

	commitMu sync.Mutex
	nextSeq  uint64 // under commitMu: last sequence number handed out
	lastFeed atomic.Uint64
	commits  atomic.Uint64 // write transactions committed since open

	feedMu   sync.Mutex
	feedWake chan struct{} // under feedMu: closed by the next commit that writes a feed entry

	knownColl sync.Map // collection keys known to exist (never removed)

	// oldHeader: the header's format version is below headerVersion (the
	// store opened read-only, so it was not bumped); the store stays
	// read-only until opened again with space. Set only by Open.
	oldHeader atomic.Bool

	// legacy: the store is in record layout 1 (opened read-only, so not
	// upgraded; layout.go). Set only by Open.
	legacy atomic.Bool

	lifeMu  sync.Mutex
	closed  bool
	closing chan struct{}
	ops     sync.WaitGroup
	active  int           // under lifeMu: operations in flight (as ops)
	reopen  chan struct{} // under lifeMu: non-nil while Badger is reopened read-write
	idle    chan struct{} // under lifeMu: closed by end when active drops to 0 during a reopen
	// dbState (under lifeMu): dbOpen, dbClosing (a Close is running),
	// dbClosed, or dbDeferred (Close found too little space to flush and
	// left Badger open; a later Close tries again).
	dbState int
}

const (
	dbOpen = iota
	dbClosing
	dbClosed
	dbDeferred
)

// keyState is the set of keys in force for transactions that read stateKey
// at the given Badger version.
type keyState struct {
	version uint64
	cur     *epochKeys
	next    *epochKeys // non-nil while a rotation is in progress
}

// write returns the epoch new values are written under.
func (st *keyState) write() *epochKeys {
	if st.next != nil {
		return st.next
	}
	return st.cur
}

// reads returns the epochs to look in, newest first.
func (st *keyState) reads() []*epochKeys {
	if st.next != nil {
		return []*epochKeys{st.next, st.cur}
	}
	return []*epochKeys{st.cur}
}

// old returns the epoch being rotated away from, or nil.
func (st *keyState) old() *epochKeys {
	if st.next != nil {
		return st.cur
	}
	return nil
}

// openBadger opens Badger in dir after checking its tables (precheckTables;
// setKey is the verified-table set's key, nil to check every table).
func openBadger(dir string, o *Options, readOnly bool, setKey []byte) (db *badger.DB, err error) {
	var bo badger.Options
	if o.InMemory {
		bo = badger.DefaultOptions("").WithInMemory(true)
	} else {
		bo = badger.DefaultOptions(dir).WithReadOnly(readOnly)
		if err := precheckTables(dir, setKey, !readOnly); err != nil {
			return nil, err
		}
	}
	z := o.sizes()
	bo = bo.WithMemTableSize(z.MemTableSize).
		WithNumMemtables(z.NumMemtables).
		WithValueLogFileSize(z.ValueLogFileSize).
		WithBlockCacheSize(z.BlockCacheSize).
		WithIndexCacheSize(z.IndexCacheSize).
		WithBaseTableSize(z.BaseTableSize).
		WithValueThreshold(z.ValueThreshold)
	if o.InMemory {
		// An in-memory Badger has no value log and refuses any value of
		// ValueThreshold or more: the largest threshold Sizes allows.
		bo = bo.WithValueThreshold(min(1<<20, z.MemTableSize*15/100))
	}
	bo = bo.WithSyncWrites(!o.NoSync).
		WithLogger(nil).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true).
		WithCompression(options.None). // values are ciphertext, keys are MACs: incompressible
		// Two compactors (Badger's minimum when compacting), so at most two
		// compactions need space at once (compactionNeed). Close only
		// flushes: compacting there too would need space Close cannot
		// count on.
		WithNumCompactors(2).
		// Bloom filters asked for at 0.1% false positives, not Badger's
		// 1%: Badger's BloomBitsPerKey makes those 10 bits a key (6
		// probes, about 0.8% false positives in fact) instead of 7 (4
		// probes, about 3.6%). Every write of a record reads its meta
		// first (the record may exist), and for a new record each false
		// positive is a seek into a table (a block read and checksummed).
		// About 0.4 bytes more per key in each table's index; batches of
		// 1000 new records 8% faster (docs/storage.md, "Performance").
		WithBloomFalsePositive(0.001).
		WithCompactL0OnClose(false)
	// Tables of BaseTableSize at every level: a compaction builds each
	// table in memory (twice its size, several at once, and Badger pools
	// 8 of those buffers), so tables 2x larger per level (Badger's
	// default) cost 2x the memory at each deeper level (docs/storage.md,
	// "Memory").
	bo.TableSizeMultiplier = 1
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, corruptf("open database")
		}
	}()
	db, err = badger.Open(bo)
	if err != nil {
		return nil, mapByMessage("open database", err, openMarks)
	}
	return db, nil
}

func newStore(db *badger.DB, dir string, o *Options, readOnly bool) *Store {
	s := &Store{db: db, dir: dir, inMem: o.InMemory, now: o.Now, closing: make(chan struct{}), trimStop: make(chan struct{}),
		// Sizes resolved now: the defaults that follow the Go memory
		// limit are those of the open, also when Badger is reopened.
		bopts:   Options{InMemory: o.InMemory, NoSync: o.NoSync, Sizes: o.sizes()},
		reserve: Reserve(*o), closeRes: closeReserve(*o),
		baseTable: o.sizes().BaseTableSize, vlogFileSize: o.sizes().ValueLogFileSize,
		valueThreshold: o.sizes().ValueThreshold}
	if s.now == nil {
		s.now = time.Now
	}
	s.readOnly.Store(readOnly)
	return s
}

// Create makes a new store in dir (created if missing). It fails with
// ErrExists if dir already holds a store or any Badger files (including
// those of a Create that crashed before writing the header: remove the
// directory and create again), and with ErrNoSpace if fewer than
// Reserve(opts) bytes are free on dir's file system.
func Create(ctx context.Context, dir string, opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !opts.InMemory {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			if isNoSpace(err) {
				return nil, fmt.Errorf("create store: %w", ErrNoSpace)
			}
			return nil, fmt.Errorf("create store: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dir, headerFile)); err == nil {
			return nil, ErrExists
		}
		// Badger files without a header: another database, or a Create that
		// crashed before writing the header. Either way, not ours to take.
		if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err == nil {
			return nil, fmt.Errorf("directory holds Badger files but no store header: %w", ErrExists)
		}
		if err := spaceFor(dir, Reserve(opts), "create store"); err != nil {
			return nil, err
		}
	}
	ot := beginOpenTrim(dir, opts.InMemory, opts.sizes())
	defer ot.end()
	db, err := openBadger(dir, &opts, false, nil)
	if err != nil {
		return nil, err
	}
	s := newStore(db, dir, &opts, false)
	if err := s.create(&opts); err != nil {
		db.Close()
		return nil, err
	}
	s.startTrim(opts.sizes(), ot.end())
	s.startGC(opts.sizes())
	return s, nil
}

func (s *Store) create(o *Options) error {
	if !s.inMem {
		// Re-check under Badger's directory lock.
		if _, err := os.Stat(filepath.Join(s.dir, headerFile)); err == nil {
			return ErrExists
		}
	}
	h := &header{version: headerVersion, gen: 1, curEpoch: 1}
	kek, err := newHeaderParams(h, o)
	if err != nil {
		return err
	}
	master := randomKey()
	defer wipe(master)
	if err := h.wrapKeys(kek, master, nil); err != nil {
		return err
	}
	if !s.inMem {
		if err := writeHeaderFile(s.dir, h); err != nil {
			return err
		}
	}
	return s.start(h, kek, master, nil)
}

// Open opens an existing store. The passphrase (or key) is checked against
// the header before Badger is opened: a wrong one returns ErrWrongKey after a
// single Argon2 run (up to three for a non-ASCII passphrase on a store made
// before passphrases were normalized; see passphrase.go) and touches no file.
// Such a store is rewritten for the normalized passphrase when it opens. An interrupted key rotation is
// resumed (and finished) before Open returns.
//
// Before Badger opens, Open reads Badger's write-ahead logs and newest
// value-log file: if one is damaged (an unreadable entry with valid entries
// after it, which Badger would silently drop), it returns ErrCorrupt and
// changes no file. A torn tail left by a crash is normal.
//
// If fewer than Reserve(opts) bytes are free, the store is opened
// read-only: reads work, writes fail with ErrNoSpace; the first write that
// finds Reserve free (and no other operation in flight) reopens Badger
// read-write and goes ahead.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	if err := opts.validateSecret(); err != nil {
		return nil, err
	}
	if err := opts.validateSizes(); err != nil {
		return nil, err
	}
	if opts.InMemory {
		return nil, fmt.Errorf("in-memory stores cannot be reopened: %w", ErrNoStore)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNoStore
		}
		return nil, fmt.Errorf("open store: %w", err)
	}
	h, err := readHeaderFile(dir)
	if err != nil {
		return nil, err
	}
	kek, cur, next, nfc, err := h.unlock(&opts)
	if err != nil {
		return nil, err
	}
	defer wipe(cur)
	defer wipe(next)
	ends, err := checkLogs(dir)
	if err != nil {
		wipe(kek)
		return nil, err
	}
	readOnly := spaceFor(dir, Reserve(opts), "open") != nil
	if readOnly {
		// Badger refuses a read-only open of a log it would truncate.
		if err := trimTornTails(dir, ends); err != nil {
			wipe(kek)
			return nil, err
		}
	}
	setKey, err := tableSetKey(cur, h.curEpoch)
	if err != nil {
		wipe(kek)
		return nil, err
	}
	ot := beginOpenTrim(dir, false, opts.sizes())
	defer ot.end()
	db, err := openBadger(dir, &opts, readOnly, setKey)
	wipe(setKey)
	if err != nil {
		wipe(kek)
		return nil, err
	}
	if h.mode == modePassphrase && !readOnly {
		// Rewritten for the normalized passphrase while Badger's lock is
		// held; skipped on a full disk (the next open does it).
		h, kek = normalizeOnOpen(dir, h, &opts, kek, nfc, cur, next)
	}
	if h.version < headerVersion && !readOnly {
		// Marked as this format before anything is upgraded or written, so
		// an older build refuses the store instead of missing its records.
		if h, err = bumpVersion(dir, h, kek, cur, next); err != nil {
			db.Close()
			wipe(kek)
			return nil, err
		}
	}
	s := newStore(db, dir, &opts, readOnly)
	s.oldHeader.Store(h.version < headerVersion)
	if err := s.start(h, kek, cur, next); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.openLayout(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if h.rotating && !readOnly {
		// A record too large to move in one transaction (its chunks over
		// ~15% of a memtable) stops the rotation where it is: the store
		// stays usable in both epochs, as during any rotation, and a later
		// RotateKey reports the error again; refusing to open would lock
		// the user out of every record.
		if err := s.RotateKey(ctx, nil); err != nil && !errors.Is(err, errTooBig) {
			s.Close()
			return nil, fmt.Errorf("resume key rotation: %w", err)
		}
	}
	s.startTrim(opts.sizes(), ot.end())
	s.startGC(opts.sizes())
	return s, nil
}

// start installs the keys and recovers the sequence counters.
func (s *Store) start(h *header, kek, cur, next []byte) error {
	ck, err := newEpochKeys(h.curEpoch, cur)
	if err != nil {
		return err
	}
	st := &keyState{cur: ck}
	if h.rotating {
		if st.next, err = newEpochKeys(h.nextEpoch, next); err != nil {
			return err
		}
	}
	s.hdr, s.kek = h, kek
	s.transMu.Lock()
	if s.readOnly.Load() {
		err = s.adopt(st)
	} else {
		err = s.publish(st)
	}
	s.transMu.Unlock()
	if err != nil {
		return err
	}
	return s.recoverSeq(st)
}

// adopt installs st for a read-only store: the version of the stateKey on
// disk is the one every read will see. Caller holds transMu.
func (s *Store) adopt(st *keyState) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(stateKey)
		if err != nil {
			return err
		}
		st.version = it.Version()
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		// A store created but never written: nothing to read, and the
		// first write needs space.
		return fmt.Errorf("open empty store read-only: %w", ErrNoSpace)
	}
	if err != nil {
		return mapBadgerErr("read key state", err)
	}
	s.state.Store(st)
	return nil
}

// publish writes stateKey (so every transaction that started earlier
// conflicts or retries) and installs st. Caller holds transMu.
func (s *Store) publish(st *keyState) error {
	if err := s.checkSpace(0); err != nil {
		return err
	}
	var w wbuf
	w.u8(1)
	w.uv(s.hdr.gen)
	val, _ := st.write().sealNew(kindState, stateKey, w.b)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(stateKey, val) }); err != nil {
		return mapBadgerErr("write key state", err)
	}
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(stateKey)
		if err != nil {
			return err
		}
		st.version = it.Version()
		return nil
	})
	if err != nil {
		return mapBadgerErr("read key state", err)
	}
	s.state.Store(st)
	return nil
}

func (s *Store) recoverSeq(st *keyState) error {
	return s.db.View(func(txn *badger.Txn) error {
		var maxSeq, maxFeed uint64
		for _, ek := range st.reads() {
			if v, ok := lastSeqUnder(txn, keyPrefix(nil, ek.epoch, kindFeed)); ok {
				maxFeed = max(maxFeed, v)
			}
			if v, ok := lastSeqUnder(txn, keyPrefix(nil, ek.epoch, kindMarker)); ok {
				maxSeq = max(maxSeq, v)
			}
		}
		s.commitMu.Lock()
		s.nextSeq = max(maxSeq, maxFeed)
		s.commitMu.Unlock()
		s.lastFeed.Store(maxFeed)
		return nil
	})
}

func lastSeqUnder(txn *badger.Txn, prefix []byte) (uint64, bool) {
	it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: prefix})
	defer it.Close()
	seek := append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	it.Seek(seek)
	if !it.ValidForPrefix(prefix) {
		return 0, false
	}
	k := it.Item().Key()
	if len(k) != len(prefix)+8 {
		return 0, false
	}
	return beU64(k[len(prefix):]), true
}

// Close waits for in-flight operations, closes Badger and wipes the key
// material the store holds. Calling Close again returns nil. Do not call
// Close from inside a List/Range/ScanLog callback.
//
// Closing a writable store flushes its memtables to tables: with too little
// free space for that (1.25 x MemTableSize + 1 MiB, less than Reserve),
// Close returns ErrNoSpace and leaves Badger open (the store refuses every
// operation with ErrClosed; everything acknowledged is in the write-ahead
// log); call Close again once space is freed. A process that exits instead
// loses nothing: the next Open replays the log.
func (s *Store) Close() error {
	s.lifeMu.Lock()
	switch s.dbState {
	case dbClosing, dbClosed:
		s.lifeMu.Unlock()
		return nil
	case dbOpen:
		s.closed = true
		close(s.closing)
	}
	s.dbState = dbClosing
	reopening := s.reopen
	s.lifeMu.Unlock()
	if reopening != nil {
		<-reopening
	}
	s.ops.Wait()
	// The value-log GC saw s.closing and its round (an operation) is
	// over: Badger's Close must not race a rewrite.
	s.stopGC()
	if !s.inMem && !s.readOnly.Load() {
		if err := spaceFor(s.dir, s.closeRes, "close: flush memtable"); err != nil {
			s.lifeMu.Lock()
			s.dbState = dbDeferred
			s.lifeMu.Unlock()
			return err
		}
	}
	// The trim runs until Badger has closed: its Close flushes the
	// memtables and ends compactions, writing tables through their maps.
	err := s.db.Close()
	s.stopTrim()
	s.trimDone.Wait()
	if err == nil && !s.inMem && !s.readOnly.Load() {
		s.recordTables()
	}
	s.lifeMu.Lock()
	s.dbState = dbClosed
	s.lifeMu.Unlock()
	s.wipeKeys()
	return mapBadgerErr("close database", err)
}

// wipeKeys zeroes the key material the store holds.
func (s *Store) wipeKeys() {
	s.transMu.Lock()
	wipe(s.kek)
	if st := s.state.Load(); st != nil {
		st.cur.wipe()
		if st.next != nil {
			st.next.wipe()
		}
	}
	s.transMu.Unlock()
}

func (s *Store) begin() error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	for s.reopen != nil {
		ch := s.reopen
		s.lifeMu.Unlock()
		<-ch
		s.lifeMu.Lock()
	}
	if s.closed {
		return ErrClosed
	}
	s.ops.Add(1)
	s.active++
	return nil
}

func (s *Store) end() {
	s.lifeMu.Lock()
	s.active--
	if s.active == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	s.lifeMu.Unlock()
	s.ops.Done()
}

// alive reports ctx cancellation or store closing, for long operations.
func (s *Store) alive(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.closing:
		return ErrClosed
	default:
		return nil
	}
}

// recoverCorrupt turns a panic inside Badger (on corrupt files) into ErrCorrupt.
func recoverCorrupt(op string, err *error) {
	if r := recover(); r != nil {
		*err = corruptf(op)
	}
}

// txnState returns the key state matching the transaction's snapshot.
func (s *Store) txnState(txn *badger.Txn) (*keyState, error) {
	item, err := txn.Get(stateKey)
	if err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, corruptf("key state")
		}
		return nil, err
	}
	v := item.Version()
	st := s.state.Load()
	if st.version != v {
		// A transition may be publishing right now: take the lock it holds
		// while doing so, then look again.
		s.transMu.Lock()
		st = s.state.Load()
		s.transMu.Unlock()
	}
	switch {
	case st.version == v:
		return st, nil
	case st.version > v:
		return nil, errRetry // the snapshot predates a transition
	}
	return nil, corruptf("key state")
}

const maxAttempts = 200

// view runs fn in a read-only transaction with the matching key state.
func (s *Store) view(ctx context.Context, op string, fn func(txn *badger.Txn, st *keyState) error) (err error) {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	defer recoverCorrupt(op, &err)
	for attempt := 0; ; attempt++ {
		if err := s.alive(ctx); err != nil {
			return err
		}
		txn := s.db.NewTransaction(false)
		st, err := s.txnState(txn)
		if err == nil {
			err = fn(txn, st)
		}
		txn.Discard()
		if errors.Is(err, errRetry) && attempt < maxAttempts {
			continue
		}
		return mapBadgerErr(op, err)
	}
}

// wtx is one read-write transaction being built. Work that needs sequence
// numbers is queued in late and runs, in order, under commitMu right before
// the commit.
type wtx struct {
	s        *Store
	txn      *badger.Txn
	st       *keyState
	late     []func(alloc func() uint64) error
	onCommit []func()
	maxFeed  uint64

	recs  map[string]*recState
	slots map[string]*slotState
	colls map[string]bool
	sums  map[string]*pageDelta // pending reconciliation sum changes (flushRecon)
	// lastColl: ensureColl's answer for this collection is known.
	lastColl string

	size int64 // bytes set so far, with per-entry overhead (for checkSpace)
}

// logEntryOverhead is a log entry's bytes beyond key and value: header,
// version suffix, CRC and a value pointer. lateEntryBytes is the allowance
// for the entries one late function writes (a record's meta with an inline
// snapshot of up to 2 KiB and its feed entry, typically well under this).
const (
	logEntryOverhead = 48
	lateEntryBytes   = 4 << 10
)

func (w *wtx) set(k, v []byte) error {
	w.size += int64(len(k) + len(v) + logEntryOverhead)
	return w.txn.Set(k, v)
}
func (w *wtx) del(k []byte) error {
	w.size += int64(len(k) + logEntryOverhead)
	return w.txn.Delete(k)
}

// update runs fn in a read-write transaction and commits it, retrying on
// conflicts with concurrent writers and key-state transitions.
func (s *Store) update(ctx context.Context, op string, fn func(w *wtx) error) (err error) {
	s.tryWritable()
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	defer recoverCorrupt(op, &err)
	for attempt := 0; ; attempt++ {
		if err := s.alive(ctx); err != nil {
			return err
		}
		txn := s.db.NewTransaction(true)
		st, err := s.txnState(txn)
		w := &wtx{s: s, txn: txn, st: st}
		if err == nil {
			err = fn(w)
		}
		if err == nil {
			err = w.flushRecon()
		}
		if err == nil {
			err = s.commit(w)
		} else {
			txn.Discard()
		}
		if (errors.Is(err, errRetry) || errors.Is(err, badger.ErrConflict)) && attempt < maxAttempts {
			continue
		}
		return mapBadgerErr(op, err)
	}
}

func (s *Store) commit(w *wtx) error {
	// The late work (metas, feed entries, markers) is written under
	// commitMu, where no statfs belongs: count it at lateEntryBytes each.
	if err := s.checkSpace(w.size + int64(len(w.late))*lateEntryBytes); err != nil {
		w.txn.Discard()
		return err
	}
	s.commitMu.Lock()
	alloc := func() uint64 { s.nextSeq++; return s.nextSeq }
	for _, f := range w.late {
		if err := f(alloc); err != nil {
			s.commitMu.Unlock()
			w.txn.Discard()
			return err
		}
	}
	done := make(chan error, 1)
	// CommitWith checks conflicts and assigns the commit timestamp
	// synchronously, so feed sequence numbers become visible in order; the
	// write and fsync happen after the lock is released.
	w.txn.CommitWith(func(err error) { done <- err })
	s.commitMu.Unlock()
	if err := <-done; err != nil {
		return err
	}
	s.commits.Add(1)
	for _, f := range w.onCommit {
		f()
	}
	if w.maxFeed > 0 {
		for {
			cur := s.lastFeed.Load()
			if cur >= w.maxFeed || s.lastFeed.CompareAndSwap(cur, w.maxFeed) {
				break
			}
		}
		s.feedMu.Lock()
		if s.feedWake != nil {
			close(s.feedWake)
			s.feedWake = nil
		}
		s.feedMu.Unlock()
	}
	return nil
}

// Commits returns how many write transactions the store has committed
// since it was opened (each one a Badger commit, with an fsync unless
// NoSync): the figure a caller watches to keep writes batched.
func (s *Store) Commits() uint64 { return s.commits.Load() }

// FeedNotify returns a channel that is closed when the next write that adds
// change-feed entries has committed (its entries are then readable). Take
// the channel before reading the feed, then wait on it: a write that
// commits in between closes it, so no write is missed.
func (s *Store) FeedNotify() <-chan struct{} {
	s.feedMu.Lock()
	defer s.feedMu.Unlock()
	if s.feedWake == nil {
		s.feedWake = make(chan struct{})
	}
	return s.feedWake
}

// getValue returns a copy of the value at key, or (nil, false) if absent.
func getValue(txn *badger.Txn, key []byte) ([]byte, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

func exists(txn *badger.Txn, key []byte) (bool, error) {
	_, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

func beU64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
