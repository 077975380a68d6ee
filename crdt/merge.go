package crdt

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/automerge/automerge-go"
)

// MergeResult reports what a merge did.
type MergeResult struct {
	HeadsBefore, HeadsAfter []automerge.ChangeHash
	// Applied counts the changes that were new to this document.
	Applied int
	// Conflicts are the semantic conflicts between the local and remote
	// sides, sorted by path then ID. Resolve them (package policy) to write
	// the resolution changes.
	Conflicts []Conflict
	// Resolutions are resolution entries found in the remote changes:
	// provisional ones announce a conflict queued for a user, final ones
	// close it.
	Resolutions []RemoteResolution
	// Repaired counts writes re-applied because two replicas created the same
	// map concurrently and Automerge kept only one of the two objects.
	Repaired int
	// ClockSkew holds the first remote timestamp the clock refused
	// (ErrClockSkew); the merge itself is complete.
	ClockSkew error
	// Fallback is true when the exact three-way fork diff was used because
	// a change carried no ferry write-set.
	Fallback bool
}

// RemoteResolution is a resolution written by another replica.
type RemoteResolution struct {
	ConflictID  string
	Path        string
	Provisional bool
	By          string
	Change      automerge.ChangeHash
	// Conflict is the full conflict record, carried by provisional
	// resolutions so that every replica can queue it.
	Conflict *Conflict
	Winner   Candidate
	// Supersedes lists earlier conflict ids this resolution also decides.
	Supersedes []string
}

// MergeChanges merges concatenated change bytes (ChangesSince output, a
// saved document, or any sequence of Automerge document and change
// chunks, as a stored record holds them); see MergeRemote. Bytes that are
// not well-formed chunks give ErrBadDocument; changes whose dependencies
// are missing give ErrMissingDeps. remoteHeads nil means the heads of the
// new changes. A document chunk costs a read of the changes it added
// (their hashes are not on the wire).
func (d *Doc) MergeChanges(raw []byte, remoteHeads []automerge.ChangeHash) (*MergeResult, error) {
	hashes, docs, err := walkChunks(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mergeChunks(raw, hashes, docs, d.am.Heads(), remoteHeads)
}

// MergeNew is New(actor) followed by MergeChanges(raw, remoteHeads), for
// a record that has no document yet, without making the empty document
// first (one automerge-go document and actor setting less). It returns
// the document whenever the bytes loaded (with MergeChanges' result and
// error), and a nil document when they did not (ErrBadDocument).
func MergeNew(raw []byte, remoteHeads []automerge.ChangeHash, actor Actor) (*Doc, *MergeResult, error) {
	if len(raw) == 0 {
		// Nothing to load: an empty document, as New gives.
		d, err := New(actor)
		if err != nil {
			return nil, nil, err
		}
		mr, err := d.MergeChanges(raw, remoteHeads)
		return d, mr, err
	}
	if err := actor.validate(); err != nil {
		return nil, nil, err
	}
	hashes, docs, err := walkChunks(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
	}
	d := shell(actor)
	d.mu.Lock()
	defer d.mu.Unlock()
	mr, err := d.mergeChunks(raw, hashes, docs, nil, remoteHeads)
	if d.am == nil {
		return nil, nil, err
	}
	return d, mr, err
}

// mergeChunks is MergeChanges after the chunks were walked; before are
// d's heads (d.am nil stands for an empty document: MergeNew). d.mu is
// held.
func (d *Doc) mergeChunks(raw []byte, hashes []automerge.ChangeHash, docs bool, before, remoteHeads []automerge.ChangeHash) (*MergeResult, error) {
	var known map[automerge.ChangeHash]bool // nil: an empty document knows none
	if len(before) == 0 {
		// A document that holds nothing yet (it knows none of the
		// changes): load the bytes strictly. LoadIncremental skips a
		// chunk it cannot parse (a document or a compressed change), and
		// the caller may keep these bytes as the record (replica's
		// apply), which a later Load would then refuse.
		if err := d.loadInto(raw); err != nil {
			return nil, err
		}
	} else {
		known = map[automerge.ChangeHash]bool{}
		for _, h := range hashes {
			if d.hasChange(h) {
				known[h] = true
			}
		}
		if err := guard(func() error { return d.am.LoadIncremental(raw) }); err != nil {
			return nil, mergeError(err)
		}
	}
	d.size.Add(docPerByte * int64(len(raw)))
	noteGarbage(resultGarbage * int64(2+len(hashes)))
	compressed := docs || len(hashes) == 0 && len(raw) > 0
	var remoteOnly []*chMeta
	var after []automerge.ChangeHash
	if len(before) == 0 && !compressed && !sureMetas {
		remoteOnly, after = d.loadedMetas(raw)
	}
	if remoteOnly == nil {
		after = nil
		seen := map[automerge.ChangeHash]bool{}
		for _, h := range hashes {
			m := d.metaOf(h)
			if m == nil {
				return &MergeResult{HeadsBefore: before, HeadsAfter: d.am.Heads()}, fmt.Errorf("%w: change %s", ErrMissingDeps, h)
			}
			if !seen[h] && !known[h] {
				seen[h] = true
				remoteOnly = append(remoteOnly, m)
			}
		}
	}
	if compressed {
		remoteOnly = nil // unknown: recomputed from the heads
	}
	res, err := d.merge(before, after, remoteHeads, remoteOnly, compressed)
	if err == nil && len(before) == 0 && res.Applied > 0 && len(d.cache.m) == res.Applied {
		// The cache holds the whole history now (every change was new):
		// later reads of it (WriterTimes) need no automerge-go result per
		// change (historyMetas).
		d.cache.whole = res.HeadsAfter
	}
	return res, err
}

// sureMetas, set by tests, makes mergeChunks read every change's
// metadata through automerge-go (metaOf), the way loadedMetas shortcuts.
var sureMetas bool

// loadedMetas returns the metadata of the changes in raw, uncompressed
// change chunks just loaded into an empty document, read from their bytes
// (no automerge-go result per change) and put in the cache, with the
// document's heads. It returns nil when raw holds a chunk it cannot read
// or a change the document did not apply (its heads are not those of
// raw's changes): the caller then reads the changes through automerge-go,
// which reports what is missing. d.mu is held.
func (d *Doc) loadedMetas(raw []byte) ([]*chMeta, []automerge.ChangeHash) {
	chunks := splitChunks(raw)
	metas := make([]*chMeta, 0, len(chunks))
	seen := make(map[automerge.ChangeHash]bool, len(chunks))
	for _, c := range chunks {
		h, err := parseChangeChunk(c)
		if err != nil {
			return nil, nil
		}
		if seen[h.hash] {
			continue
		}
		seen[h.hash] = true
		metas = append(metas, metaFromHeader(h, nil))
	}
	heads := d.am.Heads()
	// Every change of raw is in the document exactly when its heads are
	// those of raw's changes: a change left out (its dependencies
	// missing) is, or precedes, a head of raw's changes that the document
	// lacks. The strict Load refuses such bytes already (measured); this
	// keeps the shortcut sound should it not.
	if len(metas) == 0 || !SameHeads(heads, headsOfMetas(metas)) {
		return nil, nil
	}
	for _, m := range metas {
		d.cache.put(m)
	}
	return metas, heads
}

// loadInto replaces d's empty Automerge document with raw loaded strictly
// (automerge.Load: every chunk must parse, every change's dependencies be
// present), under d's actor. The caller holds d.mu.
func (d *Doc) loadInto(raw []byte) error {
	var am *automerge.Doc
	if err := guard(func() error {
		var err error
		am, err = automerge.Load(raw)
		return err
	}); err != nil {
		return mergeError(err)
	}
	if err := am.SetActorID(d.actor.automergeID()); err != nil {
		return fmt.Errorf("crdt: set actor: %w", err)
	}
	d.am = am
	return nil
}

// MergeFrom merges everything other has that d lacks, with other's heads as
// the remote heads. Convenient for tests and local copies.
func (d *Doc) MergeFrom(other *Doc) (*MergeResult, error) {
	d.mu.Lock()
	mine := d.am.Heads()
	d.mu.Unlock()
	other.mu.Lock()
	var known []automerge.ChangeHash
	for _, h := range mine {
		if other.hasChange(h) {
			known = append(known, h)
		}
	}
	var chs []*automerge.Change
	var err error
	if len(known) == len(mine) || len(mine) == 0 {
		chs, err = other.changesSince(known)
	} else {
		chs, err = other.changesSince(nil)
	}
	heads := other.am.Heads()
	other.mu.Unlock()
	if err != nil {
		return nil, err
	}
	res, err := d.MergeRemote(chs, heads)
	// automerge-go's changes borrow from the document that produced them:
	// keep it alive until they are applied.
	runtime.KeepAlive(other)
	return res, err
}

// MergeRemote applies remote changes and reports the semantic conflicts
// between what this document had (the local side) and what the remote had
// (remoteHeads: the remote document's heads after the changes; nil derives
// them from the changes). The cost is proportional to the changes exchanged:
// the remote-only changes are Changes(since local heads before), the
// local-only ones Changes(since remoteHeads), and their write-sets are
// compared. Only changes without a ferry write-set (plain Automerge clients)
// fall back to the exact three-way fork diff, which is proportional to the
// history.
func (d *Doc) MergeRemote(changes []*automerge.Change, remoteHeads []automerge.ChangeHash) (*MergeResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.am.Heads()
	var fresh []*automerge.Change
	var metas []*chMeta
	seen := map[automerge.ChangeHash]bool{}
	for _, c := range changes {
		if c == nil {
			return nil, fmt.Errorf("%w: nil change", ErrBadDocument)
		}
		h := c.Hash()
		if seen[h] {
			continue
		}
		seen[h] = true
		if _, cached := d.cache.m[h]; cached || d.hasChange(h) {
			continue
		}
		fresh = append(fresh, c)
		metas = append(metas, metaFrom(c))
	}
	if remoteHeads == nil {
		remoteHeads = headsOfMetas(metas)
	}
	if len(fresh) > 0 {
		if err := applyChanges(d.am, fresh); err != nil {
			return nil, mergeError(err)
		}
	}
	if len(fresh) > 0 {
		// Apply queues changes whose dependencies are missing: only those
		// whose dependencies are all present were applied.
		isFresh := make(map[automerge.ChangeHash]bool, len(metas))
		for _, m := range metas {
			isFresh[m.hash] = true
		}
		present := map[automerge.ChangeHash]bool{}
		known := func(h automerge.ChangeHash) bool {
			if v, ok := present[h]; ok {
				return v
			}
			_, v := d.cache.m[h]
			v = v || d.hasChange(h)
			present[h] = v
			return v
		}
		applied := map[automerge.ChangeHash]bool{}
		for progress := true; progress; {
			progress = false
			for _, m := range metas {
				if applied[m.hash] {
					continue
				}
				ok := true
				for _, dep := range m.deps {
					if isFresh[dep] && !applied[dep] || !isFresh[dep] && !known(dep) {
						ok = false
						break
					}
				}
				if ok {
					applied[m.hash], progress = true, true
				}
			}
		}
		kept := metas[:0]
		for _, m := range metas {
			if applied[m.hash] {
				d.cache.put(m)
				kept = append(kept, m)
			}
		}
		metas = kept
	}
	return d.merge(before, nil, remoteHeads, metas, false)
}

func (d *Doc) changeByHash(h automerge.ChangeHash) (*automerge.Change, error) {
	var c *automerge.Change
	err := guard(func() error {
		var err error
		c, err = d.am.Change(h)
		return err
	})
	return c, err
}

// merge runs detection after the remote changes were applied; remoteOnly
// are the changes that were new (recomputed from the heads when scan is
// set); after, when not nil, are the document's heads now (read once by
// the caller). d.mu is held.
func (d *Doc) merge(before, after, remoteHeads []automerge.ChangeHash, remoteOnly []*chMeta, scan bool) (*MergeResult, error) {
	if after == nil {
		after = d.am.Heads()
	}
	res := &MergeResult{HeadsBefore: before, HeadsAfter: after}
	if SameHeads(res.HeadsBefore, res.HeadsAfter) {
		for _, h := range remoteHeads {
			if !d.hasChange(h) {
				return res, fmt.Errorf("%w: remote head %s", ErrMissingDeps, h)
			}
		}
		return res, nil // nothing new
	}
	if scan {
		chs, err := d.changesSince(res.HeadsBefore)
		if err != nil {
			return res, fmt.Errorf("crdt: merge: %w", err)
		}
		for _, c := range chs {
			m := metaFrom(c)
			d.cache.put(m)
			remoteOnly = append(remoteOnly, m)
		}
	}
	if remoteHeads == nil {
		remoteHeads = headsOfMetas(remoteOnly)
	}
	for _, h := range remoteHeads {
		if _, ok := d.cache.m[h]; !ok && !d.hasChange(h) {
			return res, fmt.Errorf("%w: remote head %s", ErrMissingDeps, h)
		}
	}
	var localOnly []*chMeta
	if !SameHeads(res.HeadsAfter, remoteHeads) && len(res.HeadsBefore) > 0 {
		inRemote := make(map[automerge.ChangeHash]bool, len(remoteOnly))
		for _, c := range remoteOnly {
			inRemote[c.hash] = true
		}
		var common []automerge.ChangeHash
		for _, h := range remoteHeads {
			if !inRemote[h] {
				common = append(common, h)
			}
		}
		for _, c := range remoteOnly {
			for _, h := range c.deps {
				if !inRemote[h] {
					common = append(common, h)
				}
			}
		}
		var err error
		if localOnly, err = d.localOnly(res.HeadsBefore, common); err != nil {
			return res, fmt.Errorf("crdt: merge: %w", err)
		}
	}
	res.Applied = len(remoteOnly)
	m := &merger{d: d, res: res}
	for _, c := range remoteOnly {
		if c.ws == nil {
			continue
		}
		if err := d.clock.Observe(c.ws.M.HLC); err != nil && res.ClockSkew == nil {
			res.ClockSkew = err
		}
		m.collectResolutions(&chInfo{m: c, hash: c.hash, ws: c.ws, plain: c.plain, meta: c.meta})
	}
	if len(localOnly) == 0 || len(remoteOnly) == 0 {
		return res, nil
	}
	m.remote = m.newSide(remoteOnly, remoteHeads)
	m.local = m.newSide(localOnly, res.HeadsBefore)
	if m.local.plain || m.remote.plain {
		res.Fallback = true
		if err := m.threeWay(); err != nil {
			return res, err
		}
	} else {
		m.local.computeFrontier()
		m.remote.computeFrontier()
	}
	if err := guard(m.detect); err != nil {
		return res, err
	}
	if err := guard(m.repairClashes); err != nil {
		return res, err
	}
	res.HeadsAfter = d.am.Heads()
	return res, nil
}

func headsOfMetas(chs []*chMeta) []automerge.ChangeHash {
	isDep := map[automerge.ChangeHash]bool{}
	for _, c := range chs {
		for _, h := range c.deps {
			isDep[h] = true
		}
	}
	out := []automerge.ChangeHash{}
	seen := map[automerge.ChangeHash]bool{}
	for _, c := range chs {
		h := c.hash
		if !isDep[h] && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// SameHeads reports whether two head lists hold the same hashes
// (Heads.Equal).
func SameHeads(a, b []automerge.ChangeHash) bool { return Heads(a).Equal(b) }

// ---- sides -----------------------------------------------------------------

// mergeError classifies automerge-go's refusal of changes: two changes
// with one actor and sequence number are ErrActorClash, anything else
// ErrBadDocument.
func mergeError(err error) error {
	if strings.Contains(err.Error(), "duplicate seq") {
		return fmt.Errorf("%w: %w", ErrActorClash, err)
	}
	return fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
}
