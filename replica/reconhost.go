package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/storage"
)

// The replica's side of reconciliation: which collections it covers, when
// a session asks for one, and reconData over the store's index.

// DefaultAntiEntropy is how often a pair of replicas reconciles when
// nothing else calls for it (Options.AntiEntropy zero).
const DefaultAntiEntropy = 24 * time.Hour

// sharedColls lists, sorted, the collections peer holds a live
// device-sync grant for.
func (r *Replica) sharedColls(peer string) []string {
	var out []string
	for _, g := range r.consent.Live() {
		if g.Destination == peer && g.Purpose == consent.PurposeDeviceSync {
			out = append(out, g.Collection)
		}
	}
	sort.Strings(out)
	// Live sorts by destination then collection: equal names are adjacent.
	n := 0
	for i, c := range out {
		if i == 0 || c != out[n-1] {
			out[n] = c
			n++
		}
	}
	return out[:n]
}

// intersect returns the sorted names in both sorted lists.
func intersect(a, b []string) []string {
	var out []string
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// wantRecon says whether this side asks for a reconciliation with peer:
// they never completed a session, the peer's grants changed since the
// last one, or the last reconciliation is older than Options.AntiEntropy.
func (h *host) wantRecon(ctx context.Context, peer string) (bool, error) {
	stored, ok, err := h.r.store.Slots(nsPeer+peer).Get(ctx, "grants")
	if err != nil {
		return false, fmt.Errorf("replica: grants: %w", err)
	}
	if !ok || string(stored) != h.r.grantsDigest(peer) {
		return true, nil
	}
	if _, pending, err := h.r.store.Slots(nsPeer+peer).Get(ctx, "recon-pending"); err != nil || pending {
		return pending, err
	}
	every := h.r.opts.AntiEntropy
	if every == 0 {
		every = DefaultAntiEntropy
	}
	if every < 0 {
		return false, nil
	}
	last, err := h.r.slotUint(ctx, nsPeer+peer, "recon-at")
	if err != nil {
		return false, err
	}
	return h.r.opts.Now().Sub(time.Unix(0, int64(last))) >= every, nil
}

// reconBegin sets up a reconciliation over colls: the feed up to now is
// covered by it for those collections (the session's feed scan skips
// their entries up to the returned position).
//
// Until the session completes, the pair asks for a reconciliation again:
// the cursors may move past records the reconciliation has not delivered
// yet, so a session cut before its end must not leave them trusted.
func (h *host) reconBegin(ctx context.Context, peer string, colls []string) (uint64, error) {
	if err := h.r.store.Slots(nsPeer+peer).Put(ctx, "recon-pending", []byte{1}); err != nil {
		return 0, fmt.Errorf("replica: reconciliation: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.peer = peer
	h.reconColls = make(map[string]bool, len(colls))
	for _, c := range colls {
		h.reconColls[c] = true
	}
	h.reconList = colls
	h.reconUpTo = h.r.store.LastSeq()
	h.reconRan = true
	return h.reconUpTo, nil
}

// coversAll reports whether reconciliation covers every collection the
// peer may see, so the feed before the reconciliation need not be read.
func (h *host) coversAll(peer string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.r.sharedColls(peer) {
		if !h.reconColls[c] {
			return false
		}
	}
	return true
}

// skipFeed reports whether the feed entry at seq for coll is covered by
// the session's reconciliation.
func (h *host) skipFeed(seq uint64, coll string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reconColls != nil && seq <= h.reconUpTo && h.reconColls[coll]
}

func (h *host) reconSums(ctx context.Context) ([]storage.ReconSum, error) {
	out := make([]storage.ReconSum, storage.ReconBuckets)
	h.reconHas = map[string]map[uint16]bool{}
	for _, c := range h.reconList {
		sums, err := h.r.store.ReconSums(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("replica: reconciliation sums: %w", err)
		}
		has := make(map[uint16]bool, len(sums))
		for _, s := range sums {
			out[s.Bucket].Count += s.Count
			storage.AddSum(&out[s.Bucket].Sum, s.Sum)
			has[s.Bucket] = true
		}
		h.reconHas[c] = has
	}
	return out, nil
}

func (h *host) reconItems(ctx context.Context, lo, hi uint16) ([]reconItem, error) {
	var out []reconItem
	for _, c := range h.reconList {
		for b := lo; b < hi; b++ {
			if !h.reconHas[c][b] {
				continue
			}
			items, err := h.r.store.ReconItems(ctx, c, b)
			if err != nil {
				return nil, fmt.Errorf("replica: reconciliation items: %w", err)
			}
			for _, it := range items {
				out = append(out, reconItem{coll: c, id: it.ID, key: it.Key, heads: it.Heads, hash: it.Hash})
			}
		}
	}
	sortItems(out)
	return out, nil
}

// reconFeed lists the reconciled collections' records in feed order, for
// a span expanded through the feed (reconFeeder): entries after `after`
// up to the position the reconciliation began at (later writes go out
// through the feed scan).
func (h *host) reconFeed(ctx context.Context, after uint64, limit int) ([]recRef, uint64, bool, error) {
	h.mu.Lock()
	upTo, colls := h.reconUpTo, h.reconColls
	h.mu.Unlock()
	if after >= upTo {
		return nil, after, true, nil
	}
	feed, err := h.r.store.Feed(ctx, after, limit)
	if err != nil {
		return nil, 0, false, fmt.Errorf("replica: reconciliation feed: %w", err)
	}
	var out []recRef
	next := after
	for _, e := range feed {
		if e.Seq > upTo {
			return out, upTo, true, nil
		}
		next = e.Seq
		if colls[e.Collection] {
			out = append(out, recRef{e.Collection, e.ID})
		}
	}
	return out, next, len(feed) < limit || next >= upTo, nil
}

var _ reconFeeder = (*host)(nil)

// reconHeads: the peer holds coll/id at theirs. When this side holds all of
// theirs, it sends what they lack (nothing if they hold all of its own).
// Otherwise the peer holds changes this side lacks: at round 0 it answers
// with its heads (the peer then sends precisely what it lacks, and learns
// whether this side holds changes it lacks); at round 1 both sides hold
// changes the other lacks, so it sends its changes since the heads both
// are known to hold and answers so the peer does the same (round 2,
// which is not answered).
func (h *host) reconHeads(ctx context.Context, coll, id string, theirs [][]byte, round uint8) (*reconSend, [][]byte, bool, error) {
	peerHeads, err := crdt.HeadsFromBytes(theirs)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	unlock := h.r.lockRecords(recordKey(coll, id))
	d, exists, err := h.r.findDoc(ctx, coll, id)
	unlock()
	if err != nil || !exists {
		return nil, nil, false, err
	}
	mine := d.Heads()
	var known crdt.Heads
	for _, x := range peerHeads {
		if d.HasChange(x) {
			known = append(known, x)
		}
	}
	if len(known) == len(peerHeads) {
		if peerHeads.Covers(mine) {
			return nil, nil, false, nil // the same heads
		}
		return &reconSend{coll: coll, id: id, since: known.Bytes()}, nil, false, nil
	}
	if round == 0 {
		return nil, mine.Bytes(), true, nil
	}
	// Both hold changes the other lacks: the changes since the heads the
	// peer is known to hold (its own, or what earlier sessions recorded).
	shared, err := h.r.sharedHeads(ctx, h.peer, coll, id)
	if err != nil {
		return nil, nil, false, err
	}
	for _, x := range shared {
		if d.HasChange(x) {
			known = append(known, x)
		}
	}
	return &reconSend{coll: coll, id: id, since: known.Dedup().Bytes()}, mine.Bytes(), true, nil
}

// orderSendsMin is the fewest sends orderSends reorders: ReadOrder reads
// the store's whole feed, which costs more than a few hundred random reads.
const orderSendsMin = 256

// orderSends puts a reconciliation's sends in the order the store reads
// their records fastest (storage.Store.ReadOrder: the order of their last
// writes, which is the order of their documents in the value log) instead
// of by name: a first meeting sends every record, and in name order each
// record is a read at a random place in the value log, which the
// mapped-file trim turns into a read from the disk whenever it has paged
// the place out since (docs/sync.md, "Sending whole records"). Fewer than
// orderSendsMin sends keep their order.
//
// Spans (reconSpan) stay where they are, after the records (compareSends):
// they are expanded a bucket at a time as they are sent, and those records
// keep their name order, since reading the whole feed for each bucket
// would cost more than it saves.
func (h *host) orderSends(ctx context.Context, sends []reconSend) error {
	n := 0
	for n < len(sends) && sends[n].span == nil {
		n++
	}
	sends = sends[:n]
	if len(sends) < orderSendsMin {
		return nil
	}
	place, err := h.r.store.ReadOrder(ctx)
	if err != nil {
		return fmt.Errorf("replica: reconciliation: %w", err)
	}
	type placed struct {
		at []byte
		s  reconSend
	}
	ps := make([]placed, len(sends))
	for i, s := range sends {
		ps[i] = placed{place(s.coll, s.id), s}
	}
	slices.SortFunc(ps, func(a, b placed) int { return bytes.Compare(a.at, b.at) })
	for i := range ps {
		sends[i] = ps[i].s
	}
	return nil
}

// reconBatch prepares records reconciliation found the peer lacks, at most
// maxRecords and about maxBytes of changes; it returns how many sends it
// consumed. A record the peer may no longer see, or that holds nothing the
// peer lacks, is left out.
func (h *host) reconBatch(ctx context.Context, peer string, sends []reconSend, maxRecords, maxBytes int) ([]recordChanges, int, error) {
	var out []recordChanges
	size, used := 0, 0
	for _, s := range sends {
		if len(out) >= maxRecords || size >= maxBytes || s.span != nil {
			break // a span is the core's to expand first (reqReconExpand)
		}
		used++
		if !validRecord(s.coll, s.id) {
			h.addInvalid(1)
			continue
		}
		if ok, err := h.r.mayShare(ctx, peer, s.coll); err != nil || !ok {
			if err != nil {
				return nil, 0, err
			}
			continue
		}
		rc, since, ok, err := h.r.changesFor(ctx, s.coll, s.id, s.since)
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			continue
		}
		h.remember(rc.Collection, rc.ID, since)
		h.count(peer, &rc)
		out = append(out, rc)
		size += len(rc.Changes)
	}
	// Read in the store's order (orderSends), sent in name order: records
	// sent together compress better when their names are alike.
	slices.SortFunc(out, func(a, b recordChanges) int {
		if c := strings.Compare(a.Collection, b.Collection); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, used, nil
}

// changesFor returns a record's changes since the heads in since that the
// document knows (all of them when none), and those heads; ok is false
// when the record does not exist or there is nothing after since.
func (r *Replica) changesFor(ctx context.Context, coll, id string, sinceB [][]byte) (recordChanges, crdt.Heads, bool, error) {
	since, err := crdt.HeadsFromBytes(sinceB)
	if err != nil {
		return recordChanges{}, nil, false, err
	}
	unlock := r.lockRecords(recordKey(coll, id))
	defer unlock()
	if len(since) == 0 {
		rc, ok, err := r.wholeRecord(ctx, coll, id)
		return rc, nil, ok, err
	}
	d, exists, err := r.loadDoc(ctx, coll, id)
	if err != nil || !exists {
		return recordChanges{}, nil, false, err
	}
	known := since[:0:0]
	for _, k := range since {
		if d.HasChange(k) {
			known = append(known, k)
		}
	}
	mine := d.Heads()
	if len(known) > 0 && known.Covers(mine) {
		return recordChanges{}, nil, false, nil
	}
	changes, err := d.ChangesSince(known...)
	if err != nil {
		return recordChanges{}, nil, false, fmt.Errorf("replica: changes %s/%s: %w", coll, id, err)
	}
	if len(changes) == 0 {
		return recordChanges{}, nil, false, nil
	}
	return recordChanges{Collection: coll, ID: id, Heads: mine.Bytes(), Changes: changes}, known, true, nil
}

// maxStoredSend bounds the stored bytes wholeRecord sends as they are: a
// stored document is one chunk, and a chunk larger than a frame would
// have to be sent in pieces the receiver checks against maxChangeBytes
// (split.go). Larger records go as their changes.
const maxStoredSend = 256 << 10

// wholeRecord returns the whole of a record for a peer that holds none
// of it; ok is false when the record does not exist. The caller holds the
// record's lock. A record not in the document cache and at most
// maxStoredSend bytes is sent as storage holds it (a saved document, then
// the change chunks appended since), with the heads of its metadata: no
// Automerge load, which is most of what sending a small record costs
// (docs/sync.md, "Sending whole records"); the receiver merges document
// chunks like changes (crdt.Doc.MergeChanges).
func (r *Replica) wholeRecord(ctx context.Context, coll, id string) (recordChanges, bool, error) {
	if r.cache.get(recordKey(coll, id)) == nil {
		b, meta, err := r.store.Load(ctx, coll, id)
		if errors.Is(err, storage.ErrNotFound) {
			return recordChanges{}, false, nil
		}
		if err != nil {
			return recordChanges{}, false, fmt.Errorf("replica: load %s/%s: %w", coll, id, err)
		}
		if len(b) > 0 && len(b) <= maxStoredSend && len(meta.Heads) > 0 && crdt.Mergeable(b) {
			return recordChanges{Collection: coll, ID: id, Heads: meta.Heads, Changes: b}, true, nil
		}
	}
	d, exists, err := r.loadDoc(ctx, coll, id)
	if err != nil || !exists {
		return recordChanges{}, false, err
	}
	changes, err := d.ChangesSince()
	if err != nil {
		return recordChanges{}, false, fmt.Errorf("replica: changes %s/%s: %w", coll, id, err)
	}
	if len(changes) == 0 {
		return recordChanges{}, false, nil
	}
	return recordChanges{Collection: coll, ID: id, Heads: d.Heads().Bytes(), Changes: changes}, true, nil
}
