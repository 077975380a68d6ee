package replica

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// Sync runs one sync session with the peer at the other end of conn and
// returns what moved. Both sides end up holding each other's changes for
// every collection the other may see. The caller owns conn.
func (r *Replica) Sync(ctx context.Context, conn transport.Conn) (SyncStats, error) {
	return r.SyncWith(ctx, conn, SyncOptions{})
}

// SyncOptions tune one session.
type SyncOptions struct {
	// Progress is called with the running counts after every frame
	// received.
	Progress func(SyncStats)
}

// SyncWith is Sync with options.
func (r *Replica) SyncWith(ctx context.Context, conn transport.Conn, opts SyncOptions) (SyncStats, error) {
	ctx, done, err := r.session(ctx)
	if err != nil {
		return SyncStats{}, err
	}
	defer done()
	peer := transport.Fingerprint(conn.RemoteIdentity())
	var stats SyncStats
	err = r.withStatus(ctx, peer, func() (SyncStats, error) {
		h := &host{r: r}
		var err error
		stats, err = runSession(ctx, conn, h, sessionConfig{
			maxRecords: r.opts.Batch,
			progress: func(s SyncStats) {
				r.status.progress(peer, s)
				if opts.Progress != nil {
					opts.Progress(s)
				}
			},
		})
		stats.InvalidNames = h.invalidNames()
		stats.ClockSkew = r.status.sessionSkews(peer)
		// What was sent was shared, even if the session failed afterwards.
		if lerr := h.recordShares(context.WithoutCancel(ctx)); lerr != nil && err == nil {
			err = lerr
		}
		return stats, err
	})
	if err != nil {
		return stats, fmt.Errorf("replica: sync with %s: %w", short(peer), err)
	}
	return stats, nil
}

// withStatus runs one session with peer (direct or through a relay space)
// between the status's begin and end: the peer shows as syncing while run
// runs, then its outcome (the stats run returns, its error, the open
// conflicts) is recorded, persisted and published. It returns run's error.
func (r *Replica) withStatus(ctx context.Context, peer string, run func() (SyncStats, error)) error {
	r.status.begin(peer)
	r.publishStatus(peer)
	stats, err := run()
	r.status.end(peer, stats, err, r.openConflicts(ctx))
	r.saveStatus(context.WithoutCancel(ctx), peer)
	r.publishStatus(peer)
	return err
}

// Serve accepts sync sessions on l until ctx is done or l is closed,
// running each in its own goroutine; it returns after every session it
// started has ended.
func (r *Replica) Serve(ctx context.Context, l transport.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
				return nil
			}
			return fmt.Errorf("replica: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			_, _ = r.Sync(ctx, conn)
		}()
	}
}

func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}

// host implements sessionHost over a Replica for one session. It counts
// what the session sends per collection, for the consent ledger.
type host struct {
	r      *Replica
	mu     sync.Mutex
	shared map[string]*consent.Share
	// grants is the digest of peer's live grants at the session's start.
	grants string
	// whole sends every record in full, ignoring what the peer is known
	// to hold (a relay space after an invitation).
	whole bool
	// echo holds the feed positions this session's applies wrote for
	// records the peer then held entirely: sending them back would be an
	// echo, so the feed scan skips them without reading anything.
	echo map[uint64]bool
	// known holds, for records sent and not yet acknowledged, the heads
	// the peer held before: the acknowledgement adds what was sent.
	known map[string]crdt.Heads
	// invalid counts records left out for names outside the rule:
	// refused when received, withheld when they would have been sent.
	invalid int

	// Reconciliation (reconhost.go): the peer, the collections it covers,
	// the feed position it covers them up to, which buckets hold records
	// per collection, whether it ran, and the peer's session count.
	peer       string
	reconColls map[string]bool
	reconList  []string
	reconUpTo  uint64
	reconHas   map[string]map[uint16]bool
	reconRan   bool
	peerGen    uint64
}

func (h *host) addInvalid(n int) {
	h.mu.Lock()
	h.invalid += n
	h.mu.Unlock()
}

func (h *host) invalidNames() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.invalid
}

func (h *host) isEcho(seq uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.echo[seq] {
		delete(h.echo, seq)
		return true
	}
	return false
}

func (h *host) remember(collection, id string, known crdt.Heads) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.known == nil {
		h.known = map[string]crdt.Heads{}
	}
	h.known[recordKey(collection, id)] = known
}

var _ sessionHost = (*host)(nil)

func (h *host) count(peer string, rc *recordChanges) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shared == nil {
		h.shared = map[string]*consent.Share{}
	}
	s := h.shared[rc.Collection]
	if s == nil {
		g, _ := h.r.consent.Allowed(peer, rc.Collection, consent.PurposeDeviceSync)
		s = &consent.Share{GrantID: g.ID, Collection: rc.Collection, Purpose: consent.PurposeDeviceSync, Destination: peer}
		h.shared[rc.Collection] = s
	}
	s.Records++
	s.Bytes += int64(len(rc.Changes))
}

// recordShares writes what the session sent into the consent ledger.
func (h *host) recordShares(ctx context.Context) error {
	h.mu.Lock()
	colls := make([]string, 0, len(h.shared))
	for c := range h.shared {
		colls = append(colls, c)
	}
	h.mu.Unlock()
	sort.Strings(colls)
	for _, c := range colls {
		if err := h.r.consent.RecordShare(ctx, *h.shared[c]); err != nil {
			return fmt.Errorf("replica: ledger: %w", err)
		}
	}
	return nil
}

func (h *host) hello(ctx context.Context, peer string) (helloMsg, error) {
	c, err := h.r.cursor(ctx, peer)
	if err != nil {
		return helloMsg{}, err
	}
	want, err := h.wantRecon(ctx, peer)
	if err != nil {
		return helloMsg{}, err
	}
	gen, err := h.r.slotUint(ctx, nsPeer+peer, "gen")
	if err != nil {
		return helloMsg{}, err
	}
	return helloMsg{Replica: h.r.fp, Name: h.r.opts.Name, Policy: h.r.opts.Policies.Fingerprint(), Cursor: c,
		Colls: h.r.sharedColls(peer), Recon: want, Gen: gen, Seq: h.r.store.LastSeq()}, nil
}

// checkPeer refuses a peer that holds no live device-sync grant: it may
// learn nothing, not even that a record exists.
func (h *host) checkPeer(ctx context.Context, peer string, theirs *helloMsg) error {
	h.mu.Lock()
	h.peerGen = theirs.Gen
	h.mu.Unlock()
	mine, err := h.r.slotUint(ctx, nsPeer+peer, "gen")
	if err != nil {
		return err
	}
	if theirs.Gen < mine {
		// The peer lost completed sessions (its store went back): what
		// the shared heads say it holds may be gone. Records of
		// collections reconciliation does not cover go whole.
		h.whole = true
	}
	if !h.r.consent.AnyAllowed(peer, consent.PurposeDeviceSync) {
		if g, ok := h.r.ExpiredGrant(ctx, peer); ok {
			return fmt.Errorf("%w: %s", ErrNoConsent, GrantExpiredMessage(g))
		}
		return fmt.Errorf("%w: %s holds no device-sync grant", ErrNoConsent, short(peer))
	}
	return nil
}

// ExpiredGrant returns the device-sync grant to peer that expired last,
// when peer holds no live one and that grant was not revoked: the reason
// a session with peer is refused is then its expiry. It reads the consent
// ledger (a refusal is rare; a failure to read reports no grant).
func (r *Replica) ExpiredGrant(ctx context.Context, peer string) (consent.Grant, bool) {
	if r.consent.AnyAllowed(peer, consent.PurposeDeviceSync) {
		return consent.Grant{}, false
	}
	entries, err := r.consent.Entries(ctx)
	if err != nil {
		return consent.Grant{}, false
	}
	revoked := map[string]bool{}
	for _, e := range entries {
		if e.Revoke != nil {
			revoked[e.Revoke.GrantID] = true
		}
	}
	now := r.opts.Now()
	var last consent.Grant
	found := false
	for _, e := range entries {
		g := e.Grant
		if g == nil || revoked[g.ID] || g.Destination != peer || g.Purpose != consent.PurposeDeviceSync ||
			g.Expires.IsZero() || g.Expires.After(now) {
			continue
		}
		if !found || g.Expires.After(last.Expires) {
			last, found = *g, true
		}
	}
	return last, found
}

// GrantExpiredMessage says that g expired and how to renew it.
func GrantExpiredMessage(g consent.Grant) string {
	return fmt.Sprintf("grant for %s expired at %s; renew it with ferry trust %s --collections %s",
		g.Destination, g.Expires.UTC().Format(time.RFC3339), g.Destination, g.Collection)
}

func (h *host) lastSeq() uint64 { return h.r.store.LastSeq() }

func (h *host) feedNotify() <-chan struct{} { return h.r.store.FeedNotify() }

// startFor says where to start reading this replica's feed for peer,
// given the peer's cursor. It rescans from the start when the peer's live
// grants differ from those of the last completed session (a newly granted
// collection's older records must go too) or when the cursor is beyond
// this feed (this store was restored from an older copy). Records the peer
// holds are skipped cheaply by their shared heads.
func (h *host) startFor(ctx context.Context, peer string, cursor uint64) (uint64, error) {
	h.grants = h.r.grantsDigest(peer)
	stored, _, err := h.r.store.Slots(nsPeer+peer).Get(ctx, "grants")
	if err != nil {
		return 0, fmt.Errorf("replica: grants: %w", err)
	}
	if err := h.checkWentBack(ctx, peer, cursor); err != nil {
		return 0, err
	}
	if string(stored) != h.grants || cursor > h.r.store.LastSeq() {
		return 0, nil
	}
	return cursor, nil
}

// checkWentBack notices that one side's store went back in time: the peer
// applied less of this feed than it had at the end of the last completed
// session (its store was replaced, wiped or restored from an older copy),
// or the peer applied more of this feed than it holds (this store was).
// Either way records may be missing on one side that the cursors and
// shared heads say are there; the peer's status says so (Stale) from now
// on. Healing the data is the sync protocol's (issue 13).
func (h *host) checkWentBack(ctx context.Context, peer string, cursor uint64) error {
	last, err := h.r.slotUint(ctx, nsPeer+peer, "peer-applied")
	if err != nil {
		return err
	}
	switch {
	case cursor < last:
		h.r.status.warn(peer, fmt.Sprintf("the peer's store was replaced or restored from an older copy "+
			"(it had applied this replica's changes up to %d, now up to %d): it may lack records sent before", last, cursor))
	case cursor > h.r.store.LastSeq():
		h.r.status.warn(peer, fmt.Sprintf("this store was replaced or restored from an older copy "+
			"(the peer had applied its changes up to %d, it now holds %d): it may lack records", cursor, h.r.store.LastSeq()))
	}
	return nil
}

// finished records the grants the completed session ran under, and how
// far the peer has applied this feed (see checkWentBack).
//
// It also counts the session in the pair's generation (both sides store
// one more than the higher of the two they said in their hellos, so they
// agree again) and, when a reconciliation ran, when it did.
func (h *host) finished(ctx context.Context, peer string, peerApplied uint64) error {
	gen, err := h.r.slotUint(ctx, nsPeer+peer, "gen")
	if err != nil {
		return err
	}
	h.mu.Lock()
	gen = max(gen, h.peerGen) + 1
	ran := h.reconRan
	h.mu.Unlock()
	writes := []storage.SlotWrite{
		{Namespace: nsPeer + peer, Key: "grants", Value: []byte(h.grants)},
		h.r.uintWrite(nsPeer+peer, "peer-applied", peerApplied),
		h.r.uintWrite(nsPeer+peer, "gen", gen),
	}
	if ran {
		writes = append(writes, h.r.uintWrite(nsPeer+peer, "recon-at", uint64(h.r.opts.Now().UnixNano())),
			storage.SlotWrite{Namespace: nsPeer + peer, Key: "recon-pending", Delete: true})
	}
	if ran {
		// A completed reconciliation healed whatever either store lost
		// (docs/sync.md): the pair is no longer stale.
		h.r.status.unwarn(peer)
	}
	if _, err := h.r.store.Write(ctx, storage.Batch{Slots: writes}); err != nil {
		return fmt.Errorf("replica: grants: %w", err)
	}
	return nil
}

// grantsDigest names the set of live device-sync grants peer holds.
func (r *Replica) grantsDigest(peer string) string {
	var ids []string
	for _, g := range r.consent.Live() {
		if g.Destination == peer && g.Purpose == consent.PurposeDeviceSync {
			ids = append(ids, g.ID)
		}
	}
	sort.Strings(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, ",")))
	return hex.EncodeToString(sum[:])
}

// mayShare reports whether peer may learn of records in collection. It
// reads the ledger's in-memory state, so a revocation takes effect at the
// next record, mid-session.
func (r *Replica) mayShare(_ context.Context, peer, collection string) (bool, error) {
	_, ok := r.consent.Allowed(peer, collection, consent.PurposeDeviceSync)
	return ok, nil
}

func (h *host) nextBatch(ctx context.Context, peer string, after uint64, maxRecords, maxBytes int) ([]recordChanges, uint64, error) {
	r := h.r
	var out []recordChanges
	upTo, size := after, 0
	const scanLimit = 4096 // feed entries looked at per batch, sent or skipped
	scanned := 0
	for len(out) < maxRecords && size < maxBytes && scanned < scanLimit {
		feed, err := r.store.Feed(ctx, upTo, maxRecords)
		if err != nil {
			return nil, 0, fmt.Errorf("replica: feed: %w", err)
		}
		if len(feed) == 0 {
			break
		}
		for _, e := range feed {
			if len(out) >= maxRecords || size >= maxBytes {
				break
			}
			scanned++
			upTo = e.Seq
			ok, err := r.mayShare(ctx, peer, e.Collection)
			if err != nil {
				return nil, 0, err
			}
			if !ok {
				continue
			}
			if h.isEcho(e.Seq) {
				continue // written by applying this peer's own changes
			}
			if h.skipFeed(e.Seq, e.Collection) {
				continue // reconciliation covers it
			}
			if !validRecord(e.Collection, e.ID) {
				h.addInvalid(1) // stored before the naming rule: it stays here
				continue
			}
			rc, known, send, err := r.outgoing(ctx, peer, e.Collection, e.ID, h.whole)
			if err != nil {
				return nil, 0, err
			}
			if send {
				h.remember(rc.Collection, rc.ID, known)
				h.count(peer, &rc)
				out = append(out, rc)
				size += len(rc.Changes)
			}
		}
	}
	return out, upTo, nil
}

// outgoing prepares the changes of one record that peer lacks, or reports
// that it holds them all. It also returns the heads the peer was known to
// hold, so the acknowledgement can record the union without reading again.
func (r *Replica) outgoing(ctx context.Context, peer, collection, id string, whole bool) (recordChanges, crdt.Heads, bool, error) {
	known, err := r.sharedHeads(ctx, peer, collection, id)
	if err != nil {
		return recordChanges{}, nil, false, err
	}
	if whole {
		known = nil
	}
	if len(known) > 0 {
		// Only a peer known to hold something can hold everything: read
		// the heads from the metadata, which is cheaper than the document.
		meta, err := r.store.Meta(ctx, collection, id)
		if errors.Is(err, storage.ErrNotFound) {
			return recordChanges{}, nil, false, nil
		}
		if err != nil {
			return recordChanges{}, nil, false, fmt.Errorf("replica: meta %s/%s: %w", collection, id, err)
		}
		mine, err := crdt.HeadsFromBytes(meta.Heads)
		if err != nil {
			return recordChanges{}, nil, false, fmt.Errorf("replica: meta %s/%s: %w: %w", collection, id, storage.ErrCorrupt, err)
		}
		if known.Covers(mine) {
			return recordChanges{}, nil, false, nil
		}
	}
	unlock := r.lockRecords(recordKey(collection, id))
	defer unlock()
	if len(known) == 0 {
		rc, ok, err := r.wholeRecord(ctx, collection, id)
		return rc, nil, ok, err
	}
	d, exists, err := r.loadDoc(ctx, collection, id)
	if err != nil {
		return recordChanges{}, nil, false, err
	}
	if !exists {
		return recordChanges{}, nil, false, nil
	}
	// Only heads the document knows may bound the delta: Automerge returns
	// every change for a head it does not know.
	since := known[:0:0]
	for _, k := range known {
		if d.HasChange(k) {
			since = append(since, k)
		}
	}
	changes, err := d.ChangesSince(since...)
	if err != nil {
		return recordChanges{}, nil, false, fmt.Errorf("replica: changes %s/%s: %w", collection, id, err)
	}
	return recordChanges{Collection: collection, ID: id, Heads: d.Heads().Bytes(), Changes: changes}, known, true, nil
}

// full answers a peer's request for a whole record. A record the peer may
// no longer see (its grant was revoked) or that does not exist is answered
// with an empty entry, so the asker stops waiting for it.
func (h *host) full(ctx context.Context, peer, collection, id string) ([]recordChanges, error) {
	r := h.r
	empty := []recordChanges{{Collection: collection, ID: id}}
	if !validRecord(collection, id) {
		return empty, nil
	}
	if ok, err := r.mayShare(ctx, peer, collection); err != nil || !ok {
		return empty, err
	}
	unlock := r.lockRecords(recordKey(collection, id))
	defer unlock()
	rc, ok, err := r.wholeRecord(ctx, collection, id)
	if err != nil || !ok {
		return empty, err
	}
	h.count(peer, &rc)
	return []recordChanges{rc}, nil
}

func (h *host) apply(ctx context.Context, peer string, recs []recordChanges, upTo uint64) ([]needMsg, int, error) {
	recs, bad := dropInvalid(recs)
	h.addInvalid(bad)
	needs, conflicts, echoes, err := h.r.applyRecords(ctx, peer, recs, upTo)
	if len(echoes) > 0 {
		h.mu.Lock()
		if h.echo == nil {
			h.echo = map[uint64]bool{}
		}
		for _, s := range echoes {
			h.echo[s] = true
		}
		h.mu.Unlock()
	}
	return needs, conflicts, err
}

// applyRecords merges records received from peer (or imported, when peer
// is empty), decides conflicts, and writes the records, the shared heads
// and the cursor in one transaction. It returns the feed positions it
// wrote for records the peer now holds entirely (echoes).
func (r *Replica) applyRecords(ctx context.Context, peer string, recs []recordChanges, upTo uint64) ([]needMsg, int, []uint64, error) {
	return r.apply(ctx, peer, recs, upTo, nil)
}

// applyStats counts, for Restore, the records an apply created and the
// existing ones it changed.
type applyStats struct{ created, merged int }

// apply is applyRecords, counting into st when it is not nil.
func (r *Replica) apply(ctx context.Context, peer string, recs []recordChanges, upTo uint64, st *applyStats) ([]needMsg, int, []uint64, error) {
	keys := make([]string, len(recs))
	for i, rc := range recs {
		keys[i] = recordKey(rc.Collection, rc.ID)
	}
	unlock := r.lockRecords(keys...)
	defer unlock()

	var (
		batch     storage.Batch
		needs     []needMsg
		conflicts int
		touched   []string
		events    []Event
		queued    []Event
		future    []crdt.FutureWrite
		clocks    map[string]bool // writers whose clock observation changed
	)
	// fresh are the documents of records new to the store: not cached,
	// garbage once written (Release tells the C memory pacer).
	var fresh []*crdt.Doc
	defer func() {
		for _, d := range fresh {
			d.Release()
		}
	}()
	fail := func(err error) ([]needMsg, int, []uint64, error) {
		for _, k := range touched {
			r.cache.drop(k)
		}
		return nil, 0, nil, err
	}
	// Records new to the store get their documents made in parallel
	// first (premakeNew); pre holds them by index.
	pre, err := r.premakeNew(ctx, recs)
	if err != nil {
		return fail(err)
	}
	for _, p := range pre {
		if p.d != nil {
			fresh = append(fresh, p.d)
		}
	}
	var echoOf []bool  // per record write: the peer holds all of it
	var written []bool // per record write: the record existed before
	for i, rc := range recs {
		// Consent governs what leaves this device; what a paired peer sends
		// is accepted for any collection (its session passed checkPeer).
		if len(rc.Changes) == 0 && len(rc.Heads) == 0 && rc.doc == nil {
			continue // an answer to a Need the peer could not serve
		}
		key := recordKey(rc.Collection, rc.ID)
		changes := rc.Changes
		if rc.Partial || rc.Off > 0 {
			// Part of a record sent in several frames: a change larger than
			// a frame arrives in pieces, kept until it is whole.
			cs, sw, ok, err := r.assemble(ctx, peer, &rc)
			if err != nil {
				return fail(err)
			}
			batch.Slots = append(batch.Slots, sw...)
			if !ok && !rc.Partial {
				needs = append(needs, needMsg{Collection: rc.Collection, ID: rc.ID})
			}
			if !ok || len(cs) == 0 && rc.Partial {
				continue
			}
			changes = cs
		}
		// d is nil for a record new to the store: its document is made
		// from what arrived (crdt.MergeNew, importDoc), not merged into an
		// empty one.
		p := pre[i] // non-nil: new to the store, its document made already
		var d *crdt.Doc
		var existed bool
		if p == nil {
			if d, existed, err = r.findDoc(ctx, rc.Collection, rc.ID); err != nil {
				return fail(err)
			}
		}
		touched = append(touched, key)
		var before crdt.Heads
		if existed {
			before = d.Heads()
		}
		remoteHeads, err := crdt.HeadsFromBytes(rc.Heads)
		if err != nil {
			return fail(fmt.Errorf("%w: record %s/%s: %w", ErrProtocol, rc.Collection, rc.ID, err))
		}
		if rc.Partial {
			remoteHeads = nil
		}
		var mr *crdt.MergeResult
		merged := false
		if rc.doc != nil {
			// A whole document to import (ImportDoc).
			var nd *crdt.Doc
			nd, mr, changes, err = r.importDoc(d, existed, &rc)
			if err != nil {
				return fail(err)
			}
			if nd != nil {
				d = nd
				fresh = append(fresh, d)
				merged = true
			} else {
				remoteHeads, _ = crdt.HeadsFromBytes(rc.Heads)
			}
		} else if !existed {
			var nd *crdt.Doc
			if p != nil {
				nd, mr, err = p.d, p.mr, p.err
			} else if nd, mr, err = crdt.MergeNew(changes, remoteHeads, r.actor()); nd != nil {
				fresh = append(fresh, nd)
			}
			if nd != nil {
				d = nd
			}
			merged = true
		}
		if !merged {
			mr, err = d.MergeChanges(changes, remoteHeads)
		}
		if errors.Is(err, crdt.ErrActorClash) && peer == "" && existed {
			// An import or a restore of a history written under an actor
			// the record's own history uses for other changes (one replica
			// wrote both records): merged as a fork under fresh actors
			// (crdt.ForkClashes; docs/replica.md, "Import"). The failed
			// merge may have applied part of the changes: start again from
			// the stored record.
			r.cache.drop(key)
			if d, existed, err = r.loadDoc(ctx, rc.Collection, rc.ID); err != nil {
				return fail(err)
			}
			var forked []byte
			if forked, remoteHeads, err = crdt.ForkClashes(d, changes); err == nil {
				mr, err = d.MergeChanges(forked, remoteHeads)
			}
		}
		switch {
		case errors.Is(err, crdt.ErrActorClash) && peer == "":
			return fail(fmt.Errorf("%w: import %s/%s: %w; nothing was written", ErrInvalid, rc.Collection, rc.ID, err))
		case errors.Is(err, crdt.ErrActorClash):
			return fail(fmt.Errorf("replica: merge %s/%s from %s: %w: this replica's history of the record and the peer's hold different changes under one Automerge actor (as when two documents of one foreign actor were imported into this record on two replicas); the record is not merged, nothing was written",
				rc.Collection, rc.ID, peer, err))
		case errors.Is(err, crdt.ErrMissingDeps), errors.Is(err, crdt.ErrBadDocument) && !existed:
			// A delta whose dependencies this replica lacks (for a record it
			// does not have at all, Automerge reports a bad document): ask
			// for the whole record; a whole record that still fails is a
			// protocol error (see settleNeeds).
			r.cache.drop(key)
			needs = append(needs, needMsg{Collection: rc.Collection, ID: rc.ID})
			continue
		case errors.Is(err, crdt.ErrBadDocument):
			return fail(fmt.Errorf("%w: record %s/%s: %w", ErrProtocol, rc.Collection, rc.ID, err))
		case err != nil:
			return fail(fmt.Errorf("replica: merge %s/%s: %w", rc.Collection, rc.ID, err))
		}
		// Writes stamped beyond the clock bound are noted in the document
		// before conflicts are decided (docs/policy.md, "Clocks").
		fws, changed, err := r.observeClocks(d, before, mr.HeadsAfter)
		if err != nil {
			return fail(fmt.Errorf("replica: clock notes %s/%s: %w", rc.Collection, rc.ID, err))
		}
		future = append(future, fws...)
		for _, w := range changed {
			if clocks == nil {
				clocks = map[string]bool{}
			}
			clocks[w] = true
		}
		out, err := r.res.Resolve(ctx, rc.Collection, rc.ID, d, mr)
		if err != nil {
			return fail(fmt.Errorf("replica: resolve %s/%s: %w", rc.Collection, rc.ID, err))
		}
		conflicts += len(mr.Conflicts)
		for _, e := range out.Queued {
			queued = append(queued, Event{Kind: EventConflict, Collection: rc.Collection, ID: e.ID(), Peer: peer, Reason: "queued"})
		}
		for _, id := range out.Closed {
			queued = append(queued, Event{Kind: EventConflict, Collection: rc.Collection, ID: id, Peer: peer, Reason: string(out.ClosedBy[id])})
		}
		// held are heads the peer is known to hold now: those it sent with a
		// complete entry, or, for a part of a record sent in several, the
		// heads right after the merge when the peer held everything this
		// replica had before (then every change here is one it holds).
		held := remoteHeads
		if peer != "" && rc.Partial {
			held = nil
			if mr.Repaired == 0 {
				known, err := r.sharedHeads(ctx, peer, rc.Collection, rc.ID)
				if err != nil {
					return fail(err)
				}
				if len(before) == 0 || known.Covers(before) {
					held = mr.HeadsAfter
				}
			}
		}
		// The heads once the merge, the clock notes and the resolution
		// are written (one call into automerge-go, not one per use).
		after := d.Heads()
		if !before.Equal(after) {
			deleted := d.Deleted()
			if rc.doc != nil && !existed && after.Equal(mr.HeadsAfter) && !d.Saved() {
				// An import nothing was written to since: the bytes it was
				// loaded from are its document (no Save: no second copy).
				batch.Records = append(batch.Records, r.snapshotWriteAt(rc.Collection, rc.ID, rc.doc, after, deleted))
			} else if rc.doc == nil && !existed && after.Equal(mr.HeadsAfter) && !d.Saved() &&
				(mr.Applied <= maxReceivedSnapshotChanges || crdt.HoldsDocument(changes)) {
				// A record new to the store that nothing wrote to since the
				// merge: the bytes received are its document (no Save). Only
				// a saved document or a short history: loading many change
				// chunks costs more than loading their saved document.
				batch.Records = append(batch.Records, r.snapshotWriteAt(rc.Collection, rc.ID, changes, after, deleted))
			} else {
				batch.Records = append(batch.Records, r.recordWriteAt(rc.Collection, rc.ID, d, after, deleted))
			}
			written = append(written, existed)
			events = append(events, Event{Kind: EventRecord, Collection: rc.Collection, ID: rc.ID, Deleted: deleted, Peer: peer})
			// Sending the record back would be an echo when the peer holds
			// every one of its heads.
			echoOf = append(echoOf, peer != "" && len(held) > 0 && held.Covers(after))
		}
		if peer != "" && len(held) > 0 {
			sw, err := r.learnHeads(ctx, peer, rc.Collection, rc.ID, held, after)
			if err != nil {
				return fail(err)
			}
			batch.Slots = append(batch.Slots, sw)
		}
	}
	if peer != "" && upTo > 0 && len(needs) == 0 {
		// The cursor never passes a record that is not durably applied.
		batch.Slots = append(batch.Slots, r.cursorWrite(peer, upTo))
	}
	batch.Slots = append(batch.Slots, r.clockWrites(clocks)...)
	if len(batch.Records) == 0 && len(batch.Slots) == 0 {
		for _, ev := range queued {
			r.events.publish(ev)
		}
		return needs, conflicts, nil, nil
	}
	metas, err := r.store.Write(ctx, batch)
	if err != nil {
		return fail(fmt.Errorf("replica: apply: %w", err))
	}
	if st != nil {
		for _, existed := range written {
			if existed {
				st.merged++
			} else {
				st.created++
			}
		}
	}
	var echoes []uint64
	for i := range events {
		events[i].Seq = metas[i].Seq
		r.events.publish(events[i])
		if echoOf[i] {
			echoes = append(echoes, metas[i].Seq)
		}
	}
	for _, ev := range queued {
		r.events.publish(ev)
	}
	r.reportSkew(peer, future)
	return needs, conflicts, echoes, nil
}

// maxReceivedSnapshotChanges is the most change chunks a record new to
// the store may be kept as, as received, instead of its saved document.
const maxReceivedSnapshotChanges = 8

// importDoc prepares a whole imported document (rc.doc) for the apply.
// For a record new to the store (existed false) it is loaded as the
// record's own document (crdt.LoadNew: one Load) and returned with the
// merge's result; for an existing one (created since ImportDoc looked) its
// changes are read (docChanges) and returned, with rc.Heads set, for
// MergeChanges into d.
func (r *Replica) importDoc(d *crdt.Doc, existed bool, rc *recordChanges) (*crdt.Doc, *crdt.MergeResult, []byte, error) {
	if existed {
		x, err := r.docChanges(rc.Collection, rc.ID, rc.doc)
		if err != nil {
			return nil, nil, nil, err
		}
		if len(x.Changes) == 0 {
			return nil, nil, nil, fmt.Errorf("replica: import %s/%s: %w: the document holds no changes, nothing to merge", rc.Collection, rc.ID, ErrInvalid)
		}
		rc.Heads = x.Heads
		return nil, nil, x.Changes, nil
	}
	nd, mr, largest, err := crdt.LoadNew(rc.doc, r.actor())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("replica: import %s/%s: %w", rc.Collection, rc.ID, err)
	}
	switch {
	case largest > maxChangeBytes:
		nd.Release()
		return nil, nil, nil, fmt.Errorf("%w: import %s/%s: the document holds a change of %d bytes, over the %d-byte limit of one change; nothing was written",
			ErrInvalid, rc.Collection, rc.ID, largest, maxChangeBytes)
	case len(mr.HeadsAfter) == 0:
		nd.Release()
		return nil, nil, nil, fmt.Errorf("replica: import %s/%s: %w: the document holds no changes, nothing to merge", rc.Collection, rc.ID, ErrInvalid)
	}
	return nd, mr, nil, nil
}

func (h *host) acked(ctx context.Context, peer string, recs []recordChanges) error {
	var batch storage.Batch
	for _, rc := range recs {
		if len(rc.Heads) == 0 {
			continue // partial, or an empty answer: nothing is known yet
		}
		key := recordKey(rc.Collection, rc.ID)
		h.mu.Lock()
		known, ok := h.known[key]
		delete(h.known, key)
		h.mu.Unlock()
		sent, err := crdt.HeadsFromBytes(rc.Heads)
		if err != nil {
			return fmt.Errorf("replica: record acknowledgement: %w: %w", ErrProtocol, err)
		}
		if !ok {
			// Sent as a resend: read what was known.
			if known, err = h.r.sharedHeads(ctx, peer, rc.Collection, rc.ID); err != nil {
				return err
			}
		}
		// The peer now holds what it held and what was sent; the heads sent
		// were this record's heads then, so they stand for "mine".
		batch.Slots = append(batch.Slots, headsWrite(peer, rc.Collection, rc.ID, append(sent, known...), sent))
	}
	if _, err := h.r.store.Write(ctx, batch); err != nil {
		return fmt.Errorf("replica: record acknowledgement: %w", err)
	}
	return nil
}

func (h *host) cursorMoved(ctx context.Context, peer string, c uint64) error {
	if _, err := h.r.store.Write(ctx, storage.Batch{Slots: []storage.SlotWrite{h.r.cursorWrite(peer, c)}}); err != nil {
		return fmt.Errorf("replica: cursor: %w", err)
	}
	return nil
}

// cursor returns how far this replica has applied peer's feed.
func (r *Replica) cursor(ctx context.Context, peer string) (uint64, error) {
	b, ok, err := r.store.Slots(nsPeer+peer).Get(ctx, "cursor")
	if err != nil {
		return 0, fmt.Errorf("replica: cursor: %w", err)
	}
	if !ok {
		return 0, nil
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("replica: cursor: %w", storage.ErrCorrupt)
	}
	return binary.BigEndian.Uint64(b), nil
}

func (r *Replica) cursorWrite(peer string, c uint64) storage.SlotWrite {
	return storage.SlotWrite{Namespace: nsPeer + peer, Key: "cursor", Value: binary.BigEndian.AppendUint64(nil, c)}
}

// sharedHeads returns the heads of a record that peer is known to hold.
func (r *Replica) sharedHeads(ctx context.Context, peer, collection, id string) (crdt.Heads, error) {
	b, ok, err := r.store.Slots(nsShared+peer).Get(ctx, recordKey(collection, id))
	if err != nil {
		return nil, fmt.Errorf("replica: shared heads: %w", err)
	}
	if !ok {
		return nil, nil
	}
	hs, err := crdt.DecodeHeads(b)
	if err != nil {
		return nil, fmt.Errorf("replica: shared heads: %w: %w", storage.ErrCorrupt, err)
	}
	return hs, nil
}

// maxKnownHeads bounds the head set remembered per peer and record.
const maxKnownHeads = 32

// learnHeads returns the slot write recording that peer now holds heads
// (in addition to what it held before). Once the peer is known to hold
// every one of mine, the set collapses to mine: a peer's document only
// grows, so holding each of my heads means holding all of my changes.
func (r *Replica) learnHeads(ctx context.Context, peer, collection, id string, heads, mine crdt.Heads) (storage.SlotWrite, error) {
	if heads.Covers(mine) {
		// The set collapses to mine whatever was known before: no read.
		return headsWrite(peer, collection, id, heads, mine), nil
	}
	known, err := r.sharedHeads(ctx, peer, collection, id)
	if err != nil {
		return storage.SlotWrite{}, err
	}
	return headsWrite(peer, collection, id, append(append(crdt.Heads{}, heads...), known...), mine), nil
}

// headsWrite is the slot write recording that peer holds set; once set
// covers mine, mine alone stands for it.
func headsWrite(peer, collection, id string, set, mine crdt.Heads) storage.SlotWrite {
	if set.Covers(mine) {
		set = mine
	}
	set = set.Dedup()
	if len(set) > maxKnownHeads {
		set = set[:maxKnownHeads] // the newest come first
	}
	return storage.SlotWrite{Namespace: nsShared + peer, Key: recordKey(collection, id), Value: set.Encode()}
}
