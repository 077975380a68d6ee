package crdt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/automerge/automerge-go"
)

// Reading a whole document's history without a C result per change: the
// change chunks (automerge-go's SaveIncremental right after a Load) are
// parsed here, in Go. A change chunk's data starts with a header:
//
//	deps     ULEB128 count, then count 32-byte hashes
//	actor    ULEB128 length, bytes
//	seq      ULEB128
//	startOp  ULEB128
//	time     SLEB128 (milliseconds, or seconds from older writers)
//	message  ULEB128 length, UTF-8 bytes (0: none)
//	others   ULEB128 count, then each actor as length, bytes
//
// followed by the operation columns (not read here: they name actors by
// their index in actor, others).

// changeHeader is the parsed header of an uncompressed change chunk.
type changeHeader struct {
	hash    automerge.ChangeHash
	deps    []automerge.ChangeHash
	actor   []byte
	seq     uint64
	startOp uint64
	time    int64
	message string
	others  [][]byte
	rest    []byte // the columns and anything after them
}

// parseChangeChunk parses one uncompressed change chunk (magic through
// data). The checksum is not checked (changeChunks does).
func parseChangeChunk(chunk []byte) (*changeHeader, error) {
	if len(chunk) < 9 || !bytes.Equal(chunk[:4], chunkMagic) || chunk[8] != chunkChange {
		return nil, fmt.Errorf("%w: not a change chunk", errChunk)
	}
	n, k := binary.Uvarint(chunk[9:])
	if k <= 0 || uint64(len(chunk)-9-k) != n {
		return nil, fmt.Errorf("%w: bad length", errChunk)
	}
	h := &changeHeader{hash: automerge.ChangeHash(sha256.Sum256(chunk[8:]))}
	r := leb{b: chunk[9+k:]}
	nd := r.uvarint()
	if nd > uint64(len(r.b))/32 {
		return nil, fmt.Errorf("%w: bad dependency count", errChunk)
	}
	for range nd {
		var d automerge.ChangeHash
		copy(d[:], r.take(32))
		h.deps = append(h.deps, d)
	}
	h.actor = r.bytes()
	h.seq = r.uvarint()
	h.startOp = r.uvarint()
	h.time = r.svarint()
	h.message = string(r.bytes())
	no := r.uvarint()
	if no > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: bad actor count", errChunk)
	}
	for range no {
		h.others = append(h.others, r.bytes())
	}
	if r.err {
		return nil, fmt.Errorf("%w: truncated change header", errChunk)
	}
	h.rest = r.b
	return h, nil
}

// encode builds the change chunk of h (its hash is recomputed and set).
func (h *changeHeader) encode() []byte {
	var data []byte
	data = binary.AppendUvarint(data, uint64(len(h.deps)))
	for _, d := range h.deps {
		data = append(data, d[:]...)
	}
	data = appendBytes(data, h.actor)
	data = binary.AppendUvarint(data, h.seq)
	data = binary.AppendUvarint(data, h.startOp)
	data = appendSleb(data, h.time)
	data = appendBytes(data, []byte(h.message))
	data = binary.AppendUvarint(data, uint64(len(h.others)))
	for _, o := range h.others {
		data = appendBytes(data, o)
	}
	data = append(data, h.rest...)
	body := append([]byte{chunkChange}, binary.AppendUvarint(nil, uint64(len(data)))...)
	body = append(body, data...)
	sum := sha256.Sum256(body)
	h.hash = automerge.ChangeHash(sum)
	out := make([]byte, 0, 8+len(body))
	out = append(out, chunkMagic...)
	out = append(out, sum[:4]...)
	return append(out, body...)
}

func appendBytes(b, s []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// leb reads LEB128 fields; err is set (and zero values returned) once the
// input runs out or is malformed.
type leb struct {
	b   []byte
	err bool
}

func (r *leb) uvarint() uint64 {
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.err, r.b = true, nil
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *leb) svarint() int64 {
	var v int64
	var shift uint
	for i, c := range r.b {
		if shift >= 64 {
			break
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			r.b = r.b[i+1:]
			return v
		}
	}
	r.err, r.b = true, nil
	return 0
}

func (r *leb) take(n int) []byte {
	if n < 0 || n > len(r.b) {
		r.err, r.b = true, nil
		return make([]byte, max(n, 0))
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *leb) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err, r.b = true, nil
		return nil
	}
	return r.take(int(n))
}

// splitChunks cuts raw (validated by changeChunks) into its chunks.
func splitChunks(raw []byte) [][]byte {
	var out [][]byte
	for len(raw) >= 9 {
		n, k := binary.Uvarint(raw[9:])
		end := 9 + k + int(n)
		if k <= 0 || end > len(raw) {
			break
		}
		out = append(out, raw[:end:end])
		raw = raw[end:]
	}
	return out
}

// metaFromHeader is metaFrom for a parsed change: the same metadata
// without a call into automerge-go.
// names, when not nil, interns the plain changes' writer names by actor.
func metaFromHeader(h *changeHeader, names map[string]string) *chMeta {
	m := &chMeta{hash: h.hash, deps: h.deps}
	ws, ok, err := decodeWriteSet(h.message)
	if ok && err == nil {
		m.ws, m.meta, m.gen = ws, ws.M, ws.G
	} else {
		ts, _ := rawChangeMillis(h.time)
		name, ok := names[string(h.actor)]
		if !ok {
			name = "automerge:" + hex.EncodeToString(h.actor)
			if names != nil {
				names[string(h.actor)] = name
			}
		}
		m.plain, m.meta = true, WriteMeta{HLC: Timestamp{WallMillis: ts}, ReplicaID: name}
	}
	return m
}

// LoadNew loads a whole saved document (Save output, optionally followed
// by more chunks) as the document of a record that has no history yet,
// written from now on by actor. The result is what merging every change
// of b into an empty document gives (MergeChanges: the remote side is the
// whole history, so there are no conflicts, but ferry resolutions and
// clock readings in the history are reported), at the cost of one Load:
// the changes' metadata is read from their bytes, not one automerge-go
// result per change (which a 20,000-change history makes 35 MB of C
// memory). largest is the size in bytes of the largest change chunk of
// the history (as SaveIncremental returns it). The document counts as
// never saved (Saved is false): its owner stores it whole (Save). Bytes
// that do not load give ErrBadDocument; a document without changes gives
// a Doc without changes and an empty result.
func LoadNew(b []byte, actor Actor) (d *Doc, res *MergeResult, largest int, err error) {
	if err := actor.validate(); err != nil {
		return nil, nil, 0, err
	}
	am, raw, heads, err := loadWithChanges(b)
	if err != nil {
		return nil, nil, 0, err
	}
	if d, err = wrap(am, actor); err != nil {
		return nil, nil, 0, err
	}
	d.size.Add(docPerByte * int64(len(b)))
	noteGarbage(int64(len(raw)) + 3*resultGarbage)
	var metas []*chMeta
	names := map[string]string{}
	if _, cerr := changeChunks(raw); cerr == nil {
		for _, c := range splitChunks(raw) {
			largest = max(largest, len(c))
			if c[8] != chunkChange {
				metas = nil
				break // compressed: read through automerge-go below
			}
			h, err := parseChangeChunk(c)
			if err != nil {
				metas = nil
				break
			}
			metas = append(metas, metaFromHeader(h, names))
		}
	}
	if len(raw) >= 1<<20 {
		// The history's bytes (a C result and its Go copy) are garbage
		// now (raw is not used below): free them before the caller stores
		// the document.
		Collect(time.Second)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(metas) == 0 && len(heads) > 0 {
		// Not the change chunks expected: the slow, sure way.
		var chs []*automerge.Change
		if err := guard(func() error {
			var err error
			chs, err = d.am.Changes()
			return err
		}); err != nil {
			return nil, nil, 0, fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
		}
		noteGarbage(changeGarbage * int64(len(chs)))
		largest = 0
		for _, c := range chs {
			metas = append(metas, metaFrom(c))
			largest = max(largest, len(c.Save()))
		}
	}
	for _, m := range metas {
		d.cache.put(m)
	}
	if len(d.cache.m) >= len(metas) && len(metas) < maxCached {
		d.cache.whole = heads
	}
	res, err = d.merge(nil, nil, heads, metas, false)
	if err != nil {
		return nil, nil, 0, err
	}
	return d, res, largest, nil
}

// ForkClashes rewrites raw, a history to merge into d (concatenated change
// chunks, dependencies first: DocChanges output) whose merge failed with
// ErrActorClash, so that it merges: every actor whose changes in raw clash
// with d's own (same actor and sequence number, different change) is
// replaced, in raw's changes that d lacks, by a fork of it: the actor id
// followed by 8 bytes of SHA-256("ferry-fork/1", actor, hash of the
// actor's first change in raw). The changes that depend on a rewritten
// one are rewritten too (their dependencies' hashes change). The contents
// are the same; the history is a copy under other actors, concurrent with
// d's own, as if another replica had written it. Forking is deterministic:
// importing the same history again gives the same changes, so it adds
// nothing. It returns the rewritten history and its heads.
//
// When an actor's changes clash and some of them are in d already (the two
// histories share the actor's first changes and then differ), or raw holds
// a compressed change chunk, nothing can be rewritten: the error is
// ErrActorClash, naming the actor and sequence number. Bytes that are not
// change chunks give ErrBadDocument. d is not changed (its history is read
// from a saved copy: one more Load of it).
func ForkClashes(d *Doc, raw []byte) ([]byte, []automerge.ChangeHash, error) {
	if _, err := changeChunks(raw); err != nil {
		return nil, nil, fmt.Errorf("%w: changes: %w", ErrBadDocument, err)
	}
	d.mu.Lock()
	var saved []byte
	err := guard(func() error { saved = d.am.Save(); return nil })
	d.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("crdt: fork: %w", err)
	}
	noteGarbage(2*resultGarbage + perSavedByte*int64(len(saved)))
	mine, _, err := DocChanges(saved)
	if err != nil {
		return nil, nil, fmt.Errorf("crdt: fork: %w", err)
	}
	type actorSeq struct {
		actor string
		seq   uint64
	}
	have := map[automerge.ChangeHash]bool{}
	bySeq := map[actorSeq]automerge.ChangeHash{}
	for _, c := range splitChunks(mine) {
		h, err := parseChangeChunk(c)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the record holds a change ferry cannot read (%w)", ErrActorClash, err)
		}
		have[h.hash] = true
		bySeq[actorSeq{string(h.actor), h.seq}] = h.hash
	}
	chunks := splitChunks(raw)
	hdrs := make([]*changeHeader, len(chunks))
	clash := map[string]*changeHeader{} // actor -> its first clashing change
	first := map[string]*changeHeader{} // actor -> its lowest-seq change in raw
	shared := map[string]*changeHeader{}
	for i, c := range chunks {
		h, err := parseChangeChunk(c)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the history holds a change ferry cannot rewrite (%w)", ErrActorClash, err)
		}
		hdrs[i] = h
		a := string(h.actor)
		if f := first[a]; f == nil || h.seq < f.seq {
			first[a] = h
		}
		if have[h.hash] {
			if s := shared[a]; s == nil || h.seq > s.seq {
				shared[a] = h
			}
			continue
		}
		if o, ok := bySeq[actorSeq{a, h.seq}]; ok && o != h.hash && clash[a] == nil {
			clash[a] = h
		}
	}
	if len(clash) == 0 {
		return nil, nil, fmt.Errorf("%w: no change clashes with the document's own", ErrActorClash)
	}
	fork := map[string][]byte{}
	for a, h := range clash {
		if s := shared[a]; s != nil {
			return nil, nil, fmt.Errorf("%w: both histories hold changes of Automerge actor %x: they share its changes up to number %d at least, and hold different changes number %d; Automerge cannot merge them, and ferry does not rewrite a shared history (copy the document into a new record instead)",
				ErrActorClash, a, s.seq, h.seq)
		}
		sum := sha256.Sum256(append([]byte("ferry-fork/1\x00"+a+"\x00"), first[a].hash[:]...))
		fork[a] = append([]byte(a), sum[:8]...)
	}
	renamed := map[automerge.ChangeHash]automerge.ChangeHash{}
	out := make([]byte, 0, len(raw)+len(raw)/8)
	for i, h := range hdrs {
		if have[h.hash] {
			out = append(out, chunks[i]...)
			continue
		}
		changed := false
		if f, ok := fork[string(h.actor)]; ok {
			h.actor, changed = f, true
		}
		for j, o := range h.others {
			if f, ok := fork[string(o)]; ok {
				h.others[j], changed = f, true
			}
		}
		for j, dep := range h.deps {
			if n, ok := renamed[dep]; ok {
				h.deps[j], changed = n, true
			}
		}
		if !changed {
			out = append(out, chunks[i]...)
			continue
		}
		sortHashes(h.deps)
		old := h.hash
		out = append(out, h.encode()...)
		renamed[old] = h.hash
	}
	var metas []*chMeta
	for _, h := range hdrs {
		metas = append(metas, &chMeta{hash: h.hash, deps: h.deps})
	}
	return out, headsOfMetas(metas), nil
}

func sortHashes(hs []automerge.ChangeHash) {
	sort.Slice(hs, func(i, j int) bool { return bytes.Compare(hs[i][:], hs[j][:]) < 0 })
}
