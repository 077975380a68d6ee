package replica

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// Errors callers can test with errors.Is. Storage errors (wrong key,
// corruption, locked store) pass through wrapped, so errors.Is also works
// with storage.ErrWrongKey and the others.
var (
	// ErrNotFound: no such record (or it was deleted).
	ErrNotFound = errkind.New("replica: not found", errkind.NotFound)
	// ErrClosed: the replica was closed.
	ErrClosed = errors.New("replica: closed")
	// ErrInvalid: a bad argument (a collection name or record id outside
	// the rule of docs/replica.md, bad options).
	ErrInvalid = errkind.New("replica: invalid argument", errkind.Invalid)
)

// Slot namespaces this package keeps in the store.
const (
	nsSelf   = "self"    // identity key, replica name
	nsPeer   = "peer/"   // + fingerprint: cursor and pairing state
	nsShared = "shared/" // + fingerprint: record -> heads the peer holds
	nsQueue  = "conflicts"
	nsAudit  = "audit"
	nsLedger = "consent"
	nsAnchor = "consent-anchor"
)

// Options configure a replica. The zero value of every field but the key
// material is usable.
type Options struct {
	// Passphrase or Key (a raw 32-byte key, e.g. from the OS keychain)
	// unlocks the store; exactly one must be set.
	Passphrase []byte
	Key        []byte
	// KDF sets the Argon2id cost when the store is created
	// (storage.DefaultKDF when zero).
	KDF storage.KDFParams
	// InMemory keeps the store in memory (tests).
	InMemory bool
	// NoSync trades durability of the last writes for speed.
	NoSync bool
	// Sizes are the store's Badger sizes (memtables, value-log files,
	// caches, tables, value threshold); zero fields take
	// storage.DefaultSizes (sized for a phone); storage.ServerSizes() is
	// the preset for throughput over footprint. They also set the free
	// space the store keeps before refusing writes with
	// storage.ErrNoSpace (storage.Reserve).
	Sizes storage.Sizes
	// Name is a human-readable name sent to peers ("laptop").
	Name string
	// Priority is this replica's priority for the priority policy.
	Priority int
	// Policies decide semantic conflicts; every replica that syncs must
	// use the same set (their fingerprints are compared). Nil means
	// timestamp for everything.
	Policies *policy.Set
	// Now is the clock (time.Now when nil). Tests inject a fake one.
	Now func() time.Time
	// MaxClockDrift bounds how far ahead of this replica's clock a remote
	// write's time may be (DefaultMaxClockDrift when zero). A remote time
	// beyond it does not pull this replica's clock forward, and the write
	// counts as made at its arrival time plus the bound when conflicts are
	// decided by time: a clock note written into the record makes every
	// replica decide alike (docs/policy.md, "Clocks"). Such writers are
	// reported in SyncStats.ClockSkew, Status and an EventClockSkew.
	MaxClockDrift time.Duration
	// CacheSize is the most documents kept loaded (1024 when zero).
	CacheSize int
	// CacheBytes bounds the estimated C memory of the documents kept
	// loaded, in bytes (DefaultCacheBytes when zero; crdt.Doc.Footprint
	// is the estimate). A document over a quarter of it is not kept.
	CacheBytes int64
	// Batch sets how many records go in one sync frame (512 when zero).
	Batch int
	// AntiEntropy is how often a pair of replicas that otherwise trusts
	// its cursors reconciles its whole shared set anyway, as a periodic
	// check (DefaultAntiEntropy when zero; never when negative). Pairs
	// reconcile regardless at their first session, after the peer's
	// grants changed, and when either side's store went back in time.
	AntiEntropy time.Duration
	// Relay returns the client this replica drives the relay at url with,
	// acting as identity (its Ed25519 key). Nil means HTTPRelay(nil): a
	// relay.Client over http.DefaultClient. Pass HTTPRelay with an
	// *http.Client to trust a relay's TLS certificate, or
	// relay.MemRelay's Client in tests.
	Relay func(url string, identity ed25519.PrivateKey) relay.API
	// Purposes is the vocabulary of sharing purposes the application
	// declares (consent.PurposeDeviceSync, PurposeBackup and PurposeImprove
	// when empty).
	Purposes []string
	// MemoryLimit is a memory budget for the Go heap, in bytes: Create,
	// Open and OpenExisting set it as the Go runtime's soft memory limit
	// (runtime/debug.SetMemoryLimit) when it is lower than the limit in
	// force. The limit is the whole process's, not this replica's: the
	// lowest wins (a GOMEMLIMIT, an earlier SetMemoryLimit, another
	// replica's MemoryLimit), closing the replica does not restore it,
	// and it holds for the rest of the process. It covers the Go
	// runtime's memory (Badger's memtables, caches and compaction
	// buffers live there), not automerge-go's C memory (crdt's pacer
	// collects that) nor the store's memory-mapped files
	// (Sizes.MappedBudget). Under it the collector runs more often
	// instead of letting the heap grow to twice its live data; a limit
	// below the live heap costs CPU (the runtime caps the collector at
	// about half of it) and does not fail. Zero (the default) leaves the
	// runtime alone; PhoneMemoryLimit is the budget the memory benchmarks
	// run with (docs/storage.md, "The Go heap's budget"). Negative, or
	// positive below MinMemoryLimit, is ErrInvalid.
	MemoryLimit int64
}

// PhoneMemoryLimit is the MemoryLimit the memory benchmarks give ferry
// (and raw Badger, their baseline), in bytes: a budget for one replica
// on a phone. At the peaks of writing or syncing 100,000 records the live
// Go heap briefly passes it (about 70 MiB, mostly Badger's compaction
// buffers), where the collector then runs continuously.
const PhoneMemoryLimit = 64 << 20

// MinMemoryLimit is the smallest MemoryLimit accepted: below it the
// collector would run nearly all the time for a store's working set.
const MinMemoryLimit = 16 << 20

func (o *Options) validate() error {
	if (len(o.Passphrase) == 0) == (len(o.Key) == 0) {
		return fmt.Errorf("%w: set exactly one of Passphrase and Key", ErrInvalid)
	}
	if o.MemoryLimit < 0 || (o.MemoryLimit > 0 && o.MemoryLimit < MinMemoryLimit) {
		return fmt.Errorf("%w: MemoryLimit %d: want 0 or at least %d bytes", ErrInvalid, o.MemoryLimit, MinMemoryLimit)
	}
	if o.Policies == nil {
		o.Policies = policy.NewSet(policy.Rule{Policy: policy.Timestamp})
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 1024
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.Batch <= 0 {
		o.Batch = 512
	}
	if o.MaxClockDrift <= 0 {
		o.MaxClockDrift = DefaultMaxClockDrift
	}
	return nil
}

// DefaultCacheBytes is the default bound on the document cache's
// estimated C memory: 16 MiB, about a thousand records of a few hundred
// bytes (each takes ~14 KiB loaded; docs/crdt.md, "Memory").
const DefaultCacheBytes = 8 << 20

// DefaultMaxClockDrift is the default bound on how far ahead of this
// replica's clock a remote write's time may be. Devices that keep their
// clocks by NTP (every phone and desktop OS by default) agree to well
// under a second, and an unsynchronised clock drifts a few seconds a
// day, so five minutes flags only clocks that are really wrong (set by
// hand, a wrong time zone, a dead clock battery), while a write clamped
// by it still counts as made five minutes after it arrived.
const DefaultMaxClockDrift = 5 * time.Minute

func (o *Options) storage() storage.Options {
	return storage.Options{Passphrase: o.Passphrase, Key: o.Key, KDF: o.KDF, InMemory: o.InMemory, NoSync: o.NoSync, Now: o.Now, Sizes: o.Sizes}
}

// Replica is one device's copy of the data: the one entry point of the
// library. It owns the encrypted store, the document cache, the clock, the
// policies and the sync sessions. It is safe for concurrent use.
type Replica struct {
	opts  Options
	store *storage.Store
	id    ed25519.PrivateKey
	fp    string
	// actorSession is random per Open: the Automerge actor of this opening
	// (crdt.Actor.Session), so a store restored from an older copy never
	// reuses an (actor, seq) pair of changes it lost.
	actorSession string
	clock        *crdt.Clock
	res          *policy.Resolver
	queue        *policy.Queue
	audit        *policy.Audit
	// consent is the grant ledger every share goes through.
	consent *consent.Ledger

	cache  *docCache
	stripe [64]sync.Mutex
	seed   maphash.Seed

	events *hub
	status *statusBoard

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup // watcher goroutines

	// life ends when the replica closes: running sessions stop with it.
	life     context.Context
	endLife  context.CancelFunc
	sessMu   sync.Mutex
	sessions sync.WaitGroup // running Sync and SyncRelay calls

	loopMu    sync.Mutex     // guards the loop fields below
	loopWG    sync.WaitGroup // the background loop's goroutines
	stopLoops context.CancelFunc
	loopCtx   context.Context
}

// Create makes a new replica in dir; it fails with storage.ErrExists if a
// store is there already.
func Create(ctx context.Context, dir string, opts Options) (*Replica, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	applyMemoryLimit(opts.MemoryLimit)
	st, err := storage.Create(ctx, dir, opts.storage())
	if err != nil {
		return nil, err
	}
	return start(ctx, st, opts)
}

// Open opens the replica in dir, creating it (and its identity) when the
// directory holds no store yet.
func Open(ctx context.Context, dir string, opts Options) (*Replica, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	applyMemoryLimit(opts.MemoryLimit)
	st, err := storage.Open(ctx, dir, opts.storage())
	if errors.Is(err, storage.ErrNoStore) || (opts.InMemory && err != nil && !errors.Is(err, storage.ErrWrongKey)) {
		st, err = storage.Create(ctx, dir, opts.storage())
	}
	if err != nil {
		return nil, err
	}
	return start(ctx, st, opts)
}

// OpenExisting opens the replica in dir and fails with storage.ErrNoStore
// when there is none, creating nothing.
func OpenExisting(ctx context.Context, dir string, opts Options) (*Replica, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	applyMemoryLimit(opts.MemoryLimit)
	st, err := storage.Open(ctx, dir, opts.storage())
	if err != nil {
		return nil, err
	}
	return start(ctx, st, opts)
}

func start(ctx context.Context, st *storage.Store, opts Options) (*Replica, error) {
	r := &Replica{
		opts:   opts,
		store:  st,
		cache:  newDocCache(opts.CacheSize, opts.CacheBytes),
		seed:   maphash.MakeSeed(),
		events: newHub(),
		status: &statusBoard{now: opts.Now, bound: opts.MaxClockDrift, peers: map[string]*Status{}},
		closed: make(chan struct{}),
	}
	r.life, r.endLife = context.WithCancel(context.Background())
	if err := r.loadIdentity(ctx); err != nil {
		_ = st.Close()
		return nil, err
	}
	var err error
	r.clock = crdt.NewClock(opts.Now, opts.MaxClockDrift)
	r.queue = policy.NewQueue(st.Slots(nsQueue))
	r.audit = &policy.Audit{Log: logAdapter{st: st, ns: nsAudit}}
	r.consent, err = consent.Open(ctx, logAdapter{st: st, ns: nsLedger}, st.Slots(nsAnchor), consent.Options{Purposes: opts.Purposes, Now: opts.Now})
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("replica: consent ledger: %w", err)
	}
	r.res = &policy.Resolver{Policies: opts.Policies, Queue: r.queue, Audit: r.audit, Now: opts.Now, ReplicaID: r.fp}
	if err := r.loadStatus(ctx); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("replica: status: %w", err)
	}
	if err := r.loadSkews(ctx); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("replica: clock skew: %w", err)
	}
	r.loopCtx, r.stopLoops = context.WithCancel(context.Background())
	// Conflicts whose deadline passed while the replica was closed are
	// decided now, so the fallback runs without anyone calling for it.
	// A sweep that fails (an unreadable record) does not stop the open:
	// the next open and the sync loop try again.
	_, _ = r.SweepConflicts(ctx)
	return r, nil
}

// loadIdentity reads this replica's Ed25519 identity from the store, or
// makes one on first open.
func (r *Replica) loadIdentity(ctx context.Context) error {
	self := r.store.Slots(nsSelf)
	seed, ok, err := self.Get(ctx, "identity")
	if err != nil {
		return fmt.Errorf("replica: identity: %w", err)
	}
	if !ok {
		seed = make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return fmt.Errorf("replica: identity: %w", err)
		}
		if err := self.Put(ctx, "identity", seed); err != nil {
			return fmt.Errorf("replica: identity: %w", err)
		}
	}
	if len(seed) != ed25519.SeedSize {
		return fmt.Errorf("replica: identity: %w", storage.ErrCorrupt)
	}
	r.id = ed25519.NewKeyFromSeed(seed)
	r.fp = transport.Fingerprint(r.id.Public().(ed25519.PublicKey))
	var sess [16]byte
	if _, err := rand.Read(sess[:]); err != nil {
		return fmt.Errorf("replica: session id: %w", err)
	}
	r.actorSession = hex.EncodeToString(sess[:])
	return nil
}

// Close stops every goroutine the replica started and closes the store.
func (r *Replica) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.sessMu.Lock()
		close(r.closed)
		r.sessMu.Unlock()
		r.endLife()
		r.StopSync()
		r.sessions.Wait()
		r.wg.Wait()
		r.events.close()
		err = r.store.Close()
	})
	return err
}

// session registers a running session: its context ends when the replica
// closes, and Close waits for it. It fails once the replica is closed.
func (r *Replica) session(ctx context.Context) (context.Context, func(), error) {
	r.sessMu.Lock()
	defer r.sessMu.Unlock()
	if r.isClosed() {
		return nil, nil, ErrClosed
	}
	r.sessions.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(r.life, cancel)
	return ctx, func() { stop(); cancel(); r.sessions.Done() }, nil
}

func (r *Replica) isClosed() bool {
	select {
	case <-r.closed:
		return true
	default:
		return false
	}
}

// Identity returns the replica's Ed25519 private key, which transports use
// to authenticate it.
func (r *Replica) Identity() ed25519.PrivateKey { return r.id }

// ID returns the replica's identity fingerprint: its public name.
func (r *Replica) ID() string { return r.fp }

// Name returns the replica's human-readable name.
func (r *Replica) Name() string { return r.opts.Name }

// Policies returns the replica's conflict policy set.
func (r *Replica) Policies() *policy.Set { return r.opts.Policies }

func (r *Replica) actor() crdt.Actor {
	return crdt.Actor{ReplicaID: r.fp, Priority: r.opts.Priority, Clock: r.clock, Session: r.actorSession}
}

// lockRecords locks the stripes of the given records in a fixed order and
// returns the unlock. Writers of the same record are serialised; writers
// of different records rarely contend.
func (r *Replica) lockRecords(keys ...string) func() {
	idx := make([]int, 0, len(keys))
	seen := map[int]bool{}
	for _, k := range keys {
		i := int(maphash.String(r.seed, k) % uint64(len(r.stripe)))
		if !seen[i] {
			seen[i] = true
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	for _, i := range idx {
		r.stripe[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			r.stripe[idx[j]].Unlock()
		}
	}
}

// loadDoc returns the record's document from the cache or the store; a
// record that does not exist yet gives a new empty document and ok=false.
// The caller holds the record's stripe lock.
func (r *Replica) loadDoc(ctx context.Context, collection, id string) (*crdt.Doc, bool, error) {
	d, ok, err := r.findDoc(ctx, collection, id)
	if err != nil || ok {
		return d, ok, err
	}
	d, err = crdt.New(r.actor())
	return d, false, err
}

// findDoc is loadDoc without the empty document: a record that does not
// exist gives nil and ok=false. The caller holds the record's stripe lock.
func (r *Replica) findDoc(ctx context.Context, collection, id string) (*crdt.Doc, bool, error) {
	key := recordKey(collection, id)
	if d := r.cache.get(key); d != nil {
		return d, true, nil
	}
	b, _, err := r.store.Load(ctx, collection, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("replica: load %s/%s: %w", collection, id, err)
	}
	d, err := crdt.Load(b, r.actor())
	if err != nil {
		return nil, false, fmt.Errorf("replica: load %s/%s: %w: %w", collection, id, storage.ErrCorrupt, err)
	}
	r.cache.put(key, d)
	return d, true, nil
}

// recordWrite prepares the storage write for a document's new changes.
// A document never loaded nor saved (a record new to the store, as a sync
// or an import creates it) is written as one Save: storage keeps a new
// record's snapshot alone, and SaveIncremental would first make every
// change of its history a C result at once (measured: 35 MB for a
// 20,000-change document that takes 60 MB loaded; docs/crdt.md).
func (r *Replica) recordWrite(collection, id string, d *crdt.Doc) storage.RecordWrite {
	return r.recordWriteAt(collection, id, d, d.Heads(), d.Deleted())
}

// recordWriteAt is recordWrite for a caller that read the document's
// heads and deletion mark already (each is a call into automerge-go).
func (r *Replica) recordWriteAt(collection, id string, d *crdt.Doc, heads crdt.Heads, deleted bool) storage.RecordWrite {
	if !d.Saved() {
		return r.snapshotWriteAt(collection, id, d.Save(), heads, deleted)
	}
	return r.changesWriteAt(collection, id, d, heads, deleted)
}

// snapshotWriteAt is the write of a record new to the store whose whole
// document is snap (saved, or the bytes the document was loaded from when
// nothing was written since: an import, a record received whole), with
// the document's heads and deletion mark read already.
func (r *Replica) snapshotWriteAt(collection, id string, snap []byte, heads crdt.Heads, deleted bool) storage.RecordWrite {
	return storage.RecordWrite{
		Collection: collection,
		ID:         id,
		Changes:    snap, // a whole document appends like changes
		Snapshot:   func() ([]byte, error) { return snap, nil },
		Heads:      heads.Bytes(),
		Deleted:    deleted,
		Time:       r.opts.Now(),
	}
}

// changesWrite is recordWrite with the document's new changes as
// SaveIncremental returns them (change chunks only).
func (r *Replica) changesWrite(collection, id string, d *crdt.Doc) storage.RecordWrite {
	return r.changesWriteAt(collection, id, d, d.Heads(), d.Deleted())
}

// changesWriteAt is changesWrite with the document's heads and deletion
// mark read already.
func (r *Replica) changesWriteAt(collection, id string, d *crdt.Doc, heads crdt.Heads, deleted bool) storage.RecordWrite {
	return storage.RecordWrite{
		Collection: collection,
		ID:         id,
		Changes:    d.SaveIncremental(),
		Snapshot:   func() ([]byte, error) { return d.Save(), nil },
		Heads:      heads.Bytes(),
		Deleted:    deleted,
		Time:       r.opts.Now(),
	}
}

// Update runs fn on the record's document and stores what it changed, in
// one transaction. A record that does not exist is created. If fn returns
// an error nothing is stored. A collection name or record id outside the
// rule of docs/replica.md ("Collection names and record ids") is
// ErrInvalid.
func (r *Replica) Update(ctx context.Context, collection, id string, fn func(*crdt.Doc) error) error {
	if err := checkName(collection, id); err != nil {
		return err
	}
	if r.isClosed() {
		return ErrClosed
	}
	key := recordKey(collection, id)
	unlock := r.lockRecords(key)
	defer unlock()
	d, existed, err := r.loadDoc(ctx, collection, id)
	if err != nil {
		return err
	}
	before := d.Heads()
	if err := fn(d); err != nil {
		r.cache.drop(key) // the cached document may hold half of fn's edits
		return err
	}
	if before.Equal(d.Heads()) {
		return nil
	}
	w := r.changesWrite(collection, id, d) // change chunks: largestChange reads them
	if !existed {
		// A new record's changes are a loadable document: the first chunk
		// needs no separate full save (storage checks that they load).
		w.Snapshot = nil
	}
	if big, err := largestChange(w.Changes); err != nil || big > maxChangeBytes {
		r.cache.drop(key)
		if err != nil {
			return fmt.Errorf("replica: write %s/%s: %w", collection, id, err)
		}
		return fmt.Errorf("%w: the change to %s/%s is %d bytes, over the %d-byte limit of one change (a string or bytes value takes about 2.3 times its size); nothing was written: write the value in smaller pieces",
			ErrInvalid, collection, id, big, maxChangeBytes)
	}
	metas, err := r.store.Write(ctx, storage.Batch{Records: []storage.RecordWrite{w}})
	if err != nil {
		r.cache.drop(key)
		return fmt.Errorf("replica: write %s/%s: %w", collection, id, err)
	}
	r.cache.put(key, d)
	r.events.publish(Event{Kind: EventRecord, Collection: collection, ID: id, Seq: metas[0].Seq, Deleted: metas[0].Deleted, Local: true})
	// A conflict on a field this write changed no longer stands.
	r.supersede(ctx, collection, id, d, before)
	return nil
}

// Put merges fields into the record (creating it if needed): each field
// replaces the value at that key; fields not named are left alone.
func (r *Replica) Put(ctx context.Context, collection, id string, fields map[string]any) error {
	return r.Update(ctx, collection, id, func(d *crdt.Doc) error { return d.Put(fields) })
}

// Get returns the record's application-visible JSON. A name outside the
// naming rule is ErrInvalid, unless a record written before the rule is
// stored under it (it is then read, so that it can be exported and
// re-imported under a valid name).
func (r *Replica) Get(ctx context.Context, collection, id string) (map[string]any, error) {
	if err := r.checkRead(ctx, collection, id); err != nil {
		return nil, err
	}
	if r.isClosed() {
		return nil, ErrClosed
	}
	unlock := r.lockRecords(recordKey(collection, id))
	defer unlock()
	d, ok, err := r.loadDoc(ctx, collection, id)
	if err != nil {
		return nil, err
	}
	if !ok || d.Deleted() {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, collection, id)
	}
	return d.ToMap()
}

// Delete marks the record deleted. The tombstone syncs like any change; an
// edit made concurrently elsewhere is a conflict the policies decide.
func (r *Replica) Delete(ctx context.Context, collection, id string) error {
	if _, err := r.Get(ctx, collection, id); err != nil {
		return err
	}
	return r.Update(ctx, collection, id, func(d *crdt.Doc) error { return d.DeleteRecord() })
}

// ExportDoc returns the record as a standard Automerge document, which
// other Automerge applications can load. The hidden ferry metadata travels
// with it. Names are checked as by Get.
func (r *Replica) ExportDoc(ctx context.Context, collection, id string) ([]byte, error) {
	if err := r.checkRead(ctx, collection, id); err != nil {
		return nil, err
	}
	unlock := r.lockRecords(recordKey(collection, id))
	defer unlock()
	d, ok, err := r.loadDoc(ctx, collection, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, collection, id)
	}
	return d.Save(), nil
}

// ImportDoc merges an Automerge document (from ExportDoc or any Automerge
// application) into the record, deciding conflicts by the policies. It
// returns the number of conflicts found. Empty or malformed bytes give
// crdt.ErrBadDocument; a well-formed document without changes gives
// ErrInvalid (there is nothing to merge). Every value a foreign document
// holds is kept and readable through Get (see crdt.EncodeJSON for the JSON
// form of values JSON lacks).
func (r *Replica) ImportDoc(ctx context.Context, collection, id string, doc []byte) (int, error) {
	if err := checkName(collection, id); err != nil {
		return 0, err
	}
	if len(doc) == 0 {
		// automerge.Load takes no bytes as an empty document.
		return 0, fmt.Errorf("replica: import %s/%s: %w: empty input, not an Automerge document", collection, id, crdt.ErrBadDocument)
	}
	if _, err := r.store.Meta(ctx, collection, id); errors.Is(err, storage.ErrNotFound) {
		// A record new to the store: its document is the imported one,
		// loaded once by the apply (crdt.LoadNew), not loaded to read its
		// changes and built again from them (docs/crdt.md, "Memory").
		_, conflicts, _, err := r.applyRecords(ctx, "", []recordChanges{{Collection: collection, ID: id, doc: doc}}, 0)
		return conflicts, err
	} else if err != nil {
		return 0, fmt.Errorf("replica: import %s/%s: %w", collection, id, err)
	}
	rc, err := r.docChanges(collection, id, doc)
	if err != nil {
		return 0, err
	}
	if len(rc.Changes) == 0 {
		return 0, fmt.Errorf("replica: import %s/%s: %w: the document holds no changes, nothing to merge", collection, id, ErrInvalid)
	}
	if len(doc)+len(rc.Changes) >= importCollectBytes {
		// The loaded copy is garbage now, but only a collection frees its
		// C memory: free it before the apply loads the record's own copy,
		// so a large document is not held twice (docs/crdt.md, "Memory").
		crdt.Collect(importCollectWait)
	}
	_, conflicts, _, err := r.applyRecords(ctx, "", []recordChanges{rc}, 0)
	return conflicts, err
}

// docChanges turns a whole Automerge document (ImportDoc's input, or a
// backup record) into the entry the apply path takes: every change and the
// document's heads. Bytes that do not load are crdt.ErrBadDocument; a change
// over the one-change limit is ErrInvalid. A document without changes gives
// an entry without changes.
func (r *Replica) docChanges(collection, id string, doc []byte) (recordChanges, error) {
	if len(doc) == 0 {
		// automerge.Load takes no bytes as an empty document.
		return recordChanges{}, fmt.Errorf("replica: import %s/%s: %w: empty input, not an Automerge document", collection, id, crdt.ErrBadDocument)
	}
	// The document is loaded only to read its history (the apply builds
	// the record's own copy): DocChanges keeps neither.
	changes, heads, err := crdt.DocChanges(doc)
	if err != nil {
		return recordChanges{}, fmt.Errorf("replica: import %s/%s: %w", collection, id, err)
	}
	if len(changes) == 0 {
		return recordChanges{Collection: collection, ID: id}, nil
	}
	// A change ferry could not sync is refused here, not stored.
	if big, err := largestChange(changes); err != nil {
		return recordChanges{}, fmt.Errorf("replica: import %s/%s: %w", collection, id, err)
	} else if big > maxChangeBytes {
		return recordChanges{}, fmt.Errorf("%w: import %s/%s: the document holds a change of %d bytes, over the %d-byte limit of one change; nothing was written",
			ErrInvalid, collection, id, big, maxChangeBytes)
	}
	return recordChanges{Collection: collection, ID: id, Heads: heads.Bytes(), Changes: changes}, nil
}

// An import of at least importCollectBytes (document plus its changes)
// frees the loaded copy before applying (crdt.Collect), waiting at most
// importCollectWait for the finalizers.
const (
	importCollectBytes = 256 << 10
	importCollectWait  = 5 * time.Second
)

// logAdapter gives the policy audit trail the store's append-only log.
type logAdapter struct {
	st *storage.Store
	ns string
}

func (l logAdapter) Append(ctx context.Context, value []byte) (uint64, error) {
	return l.st.Append(ctx, l.ns, value)
}

func (l logAdapter) Scan(ctx context.Context, after uint64, fn func(seq uint64, value []byte) error) error {
	return l.st.ScanLog(ctx, l.ns, after, fn)
}

// Watch delivers record, conflict and status events until ctx is done or
// the replica closes, when the channel is closed. A watcher that does not
// keep up misses events (it can tell by gaps in Seq and rescan); writers
// never wait for watchers.
func (r *Replica) Watch(ctx context.Context) <-chan Event {
	ch := r.events.subscribe(1024)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		select {
		case <-ctx.Done():
		case <-r.closed:
		}
		r.events.unsubscribe(ch)
	}()
	return ch
}

// Backup writes an encrypted backup of every record (the age format; see
// storage.Store.Export). Device-specific state (identity, peer cursors,
// consent) stays out: a backup restores data, not a device.
func (r *Replica) Backup(ctx context.Context, w io.Writer, opts storage.ExportOptions) (storage.ExportStats, error) {
	if r.isClosed() {
		return storage.ExportStats{}, ErrClosed
	}
	return r.store.Export(ctx, w, opts)
}

// Restore merges a backup into this replica. The whole file is verified
// first (storage checks the age file and its framing, and every record's
// document must load, with no change over the one-change limit); a bad
// backup is storage.ErrBadBackup and writes nothing. The records then go
// through the same apply path as sync and ImportDoc: merged by Automerge,
// conflicts decided by the policies (queued, resolved and audited), a
// Watch event for every record that changed (Peer empty). Created, Updated
// and Deleted follow the merged document, as after a sync; the backup's
// own meta times are not used.
func (r *Replica) Restore(ctx context.Context, rd io.Reader, opts storage.ImportOptions) (storage.ImportStats, error) {
	if r.isClosed() {
		return storage.ImportStats{}, ErrClosed
	}
	return r.store.Import(ctx, rd, opts, restorer{r})
}

// restorer hands a backup's records to the apply path.
type restorer struct{ r *Replica }

// Check loads the record's document. Names are storage's to check (any
// name a store can hold): a backup of a store that holds names written
// before the rule of docs/replica.md restores whole, as they stay readable.
func (x restorer) Check(rec *storage.BackupRecord) error {
	_, err := x.r.docChanges(rec.Collection, rec.ID, rec.Doc)
	return err
}

func (x restorer) Apply(ctx context.Context, recs []storage.BackupRecord) (storage.ImportStats, error) {
	var st storage.ImportStats
	rcs := make([]recordChanges, 0, len(recs))
	for i := range recs {
		rc, err := x.r.docChanges(recs[i].Collection, recs[i].ID, recs[i].Doc)
		if err != nil {
			return st, fmt.Errorf("replica: restore: %w: %w", storage.ErrBadBackup, err)
		}
		if len(rc.Changes) == 0 {
			st.Unchanged++
			continue
		}
		rcs = append(rcs, rc)
	}
	var as applyStats
	needs, conflicts, _, err := x.r.apply(ctx, "", rcs, 0, &as)
	if err != nil {
		return st, err
	}
	if len(needs) > 0 {
		return st, fmt.Errorf("replica: restore %s/%s: %w: the record's document does not merge", needs[0].Collection, needs[0].ID, storage.ErrBadBackup)
	}
	st.Created += as.created
	st.Merged += as.merged
	st.Unchanged += len(rcs) - as.created - as.merged
	st.Conflicts += conflicts
	return st, nil
}
