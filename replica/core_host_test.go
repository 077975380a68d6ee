package replica

import (
	"context"
	"crypto/sha256"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/ferrysync/ferry/storage"
)

// reconModel is a modelHost that also reconciles, keeps the pair's
// session count (Gen) and remembers completed sessions, as the replica
// does: its hellos name the collections it shares ("notes" and "todo"),
// ask for a reconciliation at a first meeting or after one was cut, and a
// Gen behind the peer's makes the pair reconcile. A record's "changes" are
// the elements of its set; heads are their hashes.
type reconModel struct {
	*modelHost
	colls   []string
	gen     map[string]uint64 // peer -> completed sessions
	met     map[string]bool   // peer -> a session completed
	pending map[string]bool   // peer -> a reconciliation began and did not complete
	peerGen uint64
	peer    string
	recon   map[string]bool // the collections this session reconciles
	upTo    uint64          // the feed position the reconciliation began at
	// maxItems is the most records one reconItems call returned
	// (TestReconListedRangeReadBucketByBucket).
	maxItems int
}

func newReconModel(name string) *reconModel {
	return &reconModel{modelHost: newModelHost(name), colls: []string{"notes", "todo"},
		gen: map[string]uint64{}, met: map[string]bool{}, pending: map[string]bool{}}
}

// clone is a copy of the whole store, as `cp -a` makes.
func (h *reconModel) clone() *reconModel {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := newModelHost("")
	m.key, m.name, m.policy, m.seq = h.key, h.name, h.policy, h.seq
	for k, set := range h.records {
		m.records[k] = maps.Clone(set)
	}
	m.feedPos = maps.Clone(h.feedPos)
	m.cursor = maps.Clone(h.cursor)
	for p, recs := range h.shared {
		m.shared[p] = map[string]map[string]bool{}
		for k, hs := range recs {
			m.shared[p][k] = maps.Clone(hs)
		}
	}
	return &reconModel{modelHost: m, colls: h.colls, gen: maps.Clone(h.gen), met: maps.Clone(h.met), pending: maps.Clone(h.pending)}
}

func (h *reconModel) hello(ctx context.Context, peer string) (helloMsg, error) {
	m, err := h.modelHost.hello(ctx, peer)
	m.Colls = h.colls
	m.Gen = h.gen[peer]
	m.Recon = !h.met[peer] || h.pending[peer]
	return m, err
}

func (h *reconModel) checkPeer(_ context.Context, _ string, theirs *helloMsg) error {
	h.peerGen = theirs.Gen
	return nil
}

func (h *reconModel) reconBegin(_ context.Context, peer string, colls []string) (uint64, error) {
	h.peer = peer
	h.pending[peer] = true
	h.recon = map[string]bool{}
	for _, c := range colls {
		h.recon[c] = true
	}
	h.upTo = h.lastSeq()
	return h.upTo, nil
}

// reconFeed follows host.reconFeed over the model's feed.
func (h *reconModel) reconFeed(_ context.Context, after uint64, limit int) ([]recRef, uint64, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	type ent struct {
		key string
		pos uint64
	}
	var feed []ent
	for k, p := range h.feedPos {
		if p > after && p <= h.upTo {
			feed = append(feed, ent{k, p})
		}
	}
	sort.Slice(feed, func(i, j int) bool { return feed[i].pos < feed[j].pos })
	var out []recRef
	next := after
	for i, e := range feed {
		if i >= limit {
			return out, next, false, nil
		}
		next = e.pos
		coll, id, _ := strings.Cut(e.key, "/")
		if h.recon[coll] {
			out = append(out, recRef{coll, id})
		}
	}
	return out, next, true, nil
}

func (h *reconModel) coversAll(string) bool {
	for _, c := range h.colls {
		if !h.recon[c] {
			return false
		}
	}
	return true
}

func (h *reconModel) finished(_ context.Context, peer string, _ uint64) error {
	h.gen[peer] = max(h.gen[peer], h.peerGen) + 1
	h.met[peer] = true
	if h.recon != nil {
		delete(h.pending, peer)
	}
	return nil
}

func (h *reconModel) items() []reconItem {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []reconItem
	for k, set := range h.records {
		coll, id, _ := strings.Cut(k, "/")
		if !h.recon[coll] {
			continue
		}
		key := storage.ReconKey(coll, id)
		hs := heads(set)
		out = append(out, reconItem{coll: coll, id: id, key: key, heads: hs, hash: storage.ReconHash(key, hs)})
	}
	sortItems(out)
	return out
}

func (h *reconModel) reconSums(context.Context) ([]storage.ReconSum, error) {
	out := make([]storage.ReconSum, storage.ReconBuckets)
	for _, it := range h.items() {
		b := storage.ReconBucket(it.key)
		out[b].Bucket = b
		out[b].Count++
		storage.AddSum(&out[b].Sum, it.hash)
	}
	return out, nil
}

func (h *reconModel) reconItems(_ context.Context, lo, hi uint16) ([]reconItem, error) {
	var out []reconItem
	for _, it := range h.items() {
		if b := storage.ReconBucket(it.key); b >= lo && b < hi {
			out = append(out, it)
		}
	}
	h.maxItems = max(h.maxItems, len(out))
	return out, nil
}

// reconHeads follows the replica's rule, with "holds a head" meaning
// "holds the element it hashes".
func (h *reconModel) reconHeads(_ context.Context, coll, id string, theirs [][]byte, round uint8) (*reconSend, [][]byte, bool, error) {
	h.mu.Lock()
	mine := heads(h.records[coll+"/"+id])
	h.mu.Unlock()
	if len(mine) == 0 {
		return nil, nil, false, nil
	}
	var known [][]byte
	for _, t := range theirs {
		if hasAll(mine, [][]byte{t}) {
			known = append(known, t)
		}
	}
	if len(known) == len(theirs) {
		if hasAll(theirs, mine) {
			return nil, nil, false, nil
		}
		return &reconSend{coll: coll, id: id, since: known}, nil, false, nil
	}
	if round == 0 {
		return nil, mine, true, nil
	}
	return &reconSend{coll: coll, id: id, since: known}, mine, true, nil
}

func (h *reconModel) orderSends(context.Context, []reconSend) error { return nil }

func (h *reconModel) reconBatch(_ context.Context, _ string, sends []reconSend, maxRecords, _ int) ([]recordChanges, int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []recordChanges
	used := 0
	for _, s := range sends {
		if len(out) >= maxRecords || s.span != nil {
			break // spans are the core's to expand (reqReconExpand)
		}
		used++
		set := h.records[s.coll+"/"+s.id]
		if len(set) == 0 {
			continue
		}
		except := map[string]bool{}
		for e := range set {
			sum := sha256.Sum256([]byte(e))
			if hasAll(s.since, [][]byte{sum[:]}) {
				except[e] = true
			}
		}
		if len(except) == len(set) {
			continue
		}
		out = append(out, recordChanges{Collection: s.coll, ID: s.id, Heads: heads(set), Changes: encodeElems(set, except)})
	}
	// In name order, as host.reconBatch sends them.
	slices.SortFunc(out, func(a, b recordChanges) int { return strings.Compare(a.Collection+"/"+a.ID, b.Collection+"/"+b.ID) })
	return out, used, nil
}

// names lists a model's records and their elements, sorted.
func (h *reconModel) names() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.records))
	for k := range h.records {
		elems := make([]string, 0, len(h.records[k]))
		for e := range h.records[k] {
			elems = append(elems, e)
		}
		sort.Strings(elems)
		keys = append(keys, k+"="+strings.Join(elems, ","))
	}
	sort.Strings(keys)
	return strings.Join(keys, " ")
}
