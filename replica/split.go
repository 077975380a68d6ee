package replica

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/ferrysync/ferry/storage"
)

// Size limits that keep every sync frame and relay bundle under the
// transport's 4 MiB frame limit. They are variables only so that tests can
// lower them (large data is slow under the race detector).
var (
	// frameBudget bounds the change bytes of one frame; a record with more
	// is sent in parts (Partial entries), split between changes, and a
	// change larger than the budget in pieces of its own (Off > 0). 3 MiB.
	frameBudget = 3 << 20
	// maxChangeBytes bounds one Automerge change, however it arrives: a
	// local write that makes a larger one is refused (ErrInvalid), and so
	// are an imported document and a peer's record holding one (a protocol
	// error). It is also the most a receiver keeps of one change sent in
	// pieces. 16 MiB.
	maxChangeBytes = 16 << 20
)

// automergeMagic starts every Automerge chunk.
var automergeMagic = [4]byte{0x85, 0x6f, 0x4a, 0x83}

// splitChanges cuts concatenated Automerge change chunks at their
// boundaries: magic (4 bytes), checksum (4), type (1), ULEB128 length,
// payload.
func splitChanges(raw []byte) ([][]byte, error) {
	var out [][]byte
	for len(raw) > 0 {
		if len(raw) < 10 || [4]byte(raw[:4]) != automergeMagic {
			return nil, fmt.Errorf("%w: not an Automerge chunk", ErrInvalid)
		}
		n, w := binary.Uvarint(raw[9:])
		if w <= 0 || n > uint64(len(raw)) || 9+w+int(n) > len(raw) {
			return nil, fmt.Errorf("%w: truncated Automerge chunk", ErrInvalid)
		}
		end := 9 + w + int(n)
		out = append(out, raw[:end:end])
		raw = raw[end:]
	}
	return out, nil
}

// largestChange returns the size of the largest change in raw.
func largestChange(raw []byte) (int, error) {
	chunks, err := splitChanges(raw)
	if err != nil {
		return 0, err
	}
	largest := 0
	for _, c := range chunks {
		largest = max(largest, len(c))
	}
	return largest, nil
}

// splitBatch groups records into frames of at most budget change bytes.
// A record larger than budget is cut between its changes into parts: all
// but the last are Partial (no heads); each part is a frame of its own. A
// single change larger than budget is cut into pieces of budget bytes,
// each a part of its own carrying its offset in the change (Off); the
// receiver keeps the pieces until the change is whole.
func splitBatch(recs []recordChanges, budget int) ([][]recordChanges, error) {
	var groups [][]recordChanges
	var cur []recordChanges
	size := 0
	flush := func() {
		if len(cur) > 0 {
			groups = append(groups, cur)
			cur, size = nil, 0
		}
	}
	for _, rc := range recs {
		if len(rc.Changes) <= budget {
			if size+len(rc.Changes) > budget {
				flush()
			}
			cur = append(cur, rc)
			size += len(rc.Changes)
			continue
		}
		flush()
		chunks, err := splitChanges(rc.Changes)
		if err != nil {
			return nil, err
		}
		var part []byte
		off := 0 // bytes of part's first change sent in earlier pieces
		emit := func(last bool) {
			e := recordChanges{Collection: rc.Collection, ID: rc.ID, Changes: part, Partial: !last, Off: uint64(off)}
			if last {
				e.Heads = rc.Heads
			}
			groups = append(groups, []recordChanges{e})
			part, off = nil, 0
		}
		for _, c := range chunks {
			if len(part) > 0 && len(part)+len(c) > budget {
				emit(false)
			}
			if len(c) > budget {
				// Pieces of one change: every piece but the last is a part
				// of its own; the last may share a part with what follows.
				sent := 0
				for len(c)-sent > budget {
					part = c[sent : sent+budget : sent+budget]
					emit(false)
					sent += budget
					off = sent
				}
				part = append([]byte(nil), c[sent:]...)
				continue
			}
			part = append(part, c...)
		}
		emit(true)
	}
	flush()
	return groups, nil
}

// nsPieces + peer (+ "/" + relay sender) holds, per record, the pieces
// received so far of a change sent in pieces: an index under
// "i"+recordKey (the change's length, the next offset, each piece's
// offset) and each piece under "p"+offset (16 hex digits)+recordKey.
const nsPieces = "pieces/"

func piecesNS(peer, from string) string {
	if from != "" {
		return nsPieces + peer + "/" + from
	}
	return nsPieces + peer
}

// chunkLen parses the header of the Automerge chunk b starts with and
// returns the chunk's whole length, or ok=false when b holds less than a
// header or does not start with one.
func chunkLen(b []byte) (n uint64, ok bool) {
	if len(b) < 10 || [4]byte(b[:4]) != automergeMagic {
		return 0, false
	}
	l, w := binary.Uvarint(b[9:])
	if w <= 0 {
		return 0, false
	}
	return uint64(9+w) + l, true
}

type piecesIndex struct {
	total uint64   // the change's length in bytes
	offs  []uint64 // offsets of the pieces held, ascending, from 0
	next  uint64   // the offset the next piece must start at
}

func (x *piecesIndex) encode() []byte {
	b := binary.AppendUvarint(nil, x.total)
	b = binary.AppendUvarint(b, x.next)
	for _, o := range x.offs {
		b = binary.AppendUvarint(b, o)
	}
	return b
}

func decodePiecesIndex(b []byte) (*piecesIndex, bool) {
	x := &piecesIndex{}
	var w int
	if x.total, w = binary.Uvarint(b); w <= 0 {
		return nil, false
	}
	b = b[w:]
	if x.next, w = binary.Uvarint(b); w <= 0 {
		return nil, false
	}
	b = b[w:]
	for len(b) > 0 {
		o, w := binary.Uvarint(b)
		if w <= 0 || len(x.offs) > 0 && o <= x.offs[len(x.offs)-1] || o >= x.next {
			return nil, false
		}
		x.offs = append(x.offs, o)
		b = b[w:]
	}
	return x, x.total <= uint64(maxChangeBytes) && x.next < x.total
}

func pieceKey(rk string, off uint64) string { return fmt.Sprintf("p%016x%s", off, rk) }

func piecesIndexKey(rk string) string { return "i" + rk }

// assemble turns one received entry into the whole changes it completes.
// Pieces of a change larger than a frame are kept in slots (written with
// the rest of the apply) until the last one arrives; then the change is
// returned whole, followed by the entry's other changes. ok is false when
// a piece does not continue what is held (its start was lost, e.g. in a
// session cut short): the pieces held are dropped and the entry is
// ignored; a complete entry that cannot be assembled must be asked for in
// full. A change announced larger than maxChangeBytes is a protocol error.
func (r *Replica) assemble(ctx context.Context, peer string, rc *recordChanges) (changes []byte, writes []storage.SlotWrite, ok bool, err error) {
	ns := piecesNS(peer, rc.from)
	slots := r.store.Slots(ns)
	rk := recordKey(rc.Collection, rc.ID)
	var held *piecesIndex
	if b, found, err := slots.Get(ctx, piecesIndexKey(rk)); err != nil {
		return nil, nil, false, fmt.Errorf("replica: pieces: %w", err)
	} else if found {
		if held, ok = decodePiecesIndex(b); !ok {
			return nil, nil, false, fmt.Errorf("replica: pieces: %w", storage.ErrCorrupt)
		}
	}
	drop := func() {
		if held == nil {
			return
		}
		for _, o := range held.offs {
			writes = append(writes, storage.SlotWrite{Namespace: ns, Key: pieceKey(rk, o), Delete: true})
		}
		writes = append(writes, storage.SlotWrite{Namespace: ns, Key: piecesIndexKey(rk), Delete: true})
	}
	buf := rc.Changes
	if rc.Off > 0 && held != nil && rc.Off < held.next {
		// A piece delivered again (a relay redelivers a bundle whose apply
		// was not acknowledged): it replaces the one held at its offset
		// and everything after it.
		for i, o := range held.offs {
			if o == rc.Off {
				for _, later := range held.offs[i+1:] {
					writes = append(writes, storage.SlotWrite{Namespace: ns, Key: pieceKey(rk, later), Delete: true})
				}
				held.offs, held.next = held.offs[:i], rc.Off
				break
			}
		}
	}
	if rc.Off > 0 {
		if held == nil || held.next != rc.Off {
			drop()
			return nil, writes, false, nil
		}
		end := rc.Off + uint64(len(rc.Changes))
		if end < held.total {
			if !rc.Partial {
				return nil, nil, false, protoErr("record %s/%s ends inside a change", rc.Collection, rc.ID)
			}
			held.offs = append(held.offs, rc.Off)
			held.next = end
			writes = append(writes,
				storage.SlotWrite{Namespace: ns, Key: pieceKey(rk, rc.Off), Value: rc.Changes},
				storage.SlotWrite{Namespace: ns, Key: piecesIndexKey(rk), Value: held.encode()})
			return nil, writes, true, nil
		}
		whole := make([]byte, 0, held.total+uint64(len(rc.Changes)))
		for _, o := range held.offs {
			b, found, err := slots.Get(ctx, pieceKey(rk, o))
			if err != nil {
				return nil, nil, false, fmt.Errorf("replica: pieces: %w", err)
			}
			if !found || uint64(len(whole)) != o {
				return nil, nil, false, fmt.Errorf("replica: pieces: %w", storage.ErrCorrupt)
			}
			whole = append(whole, b...)
		}
		buf = append(whole, rc.Changes...)
	}
	drop() // what was held is used up (or stale, when Off is 0)
	// buf starts with a whole change; a partial entry may end in the first
	// piece of another.
	pos := 0
	for pos < len(buf) {
		n, parsed := chunkLen(buf[pos:])
		if parsed && n > uint64(maxChangeBytes) {
			return nil, nil, false, protoErr("record %s/%s holds a change of %d bytes, over the %d-byte limit", rc.Collection, rc.ID, n, maxChangeBytes)
		}
		if !parsed || n > uint64(len(buf)-pos) {
			break
		}
		pos += int(n)
	}
	tail := buf[pos:]
	if len(tail) == 0 {
		return buf, writes, true, nil
	}
	n, parsed := chunkLen(tail)
	if !rc.Partial || !parsed || n <= uint64(len(tail)) {
		// Not a piece: let the merge report what is wrong with it.
		return buf, writes, true, nil
	}
	x := &piecesIndex{total: n, offs: []uint64{0}, next: uint64(len(tail))}
	writes = append(writes,
		storage.SlotWrite{Namespace: ns, Key: pieceKey(rk, 0), Value: tail},
		storage.SlotWrite{Namespace: ns, Key: piecesIndexKey(rk), Value: x.encode()})
	return buf[:pos], writes, true, nil
}
