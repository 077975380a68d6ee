package replica

import (
	"encoding/binary"
	"fmt"
)

// Size limits that keep every sync frame and relay bundle under the
// transport's 4 MiB frame limit.
const (
	// maxChangeBytes bounds one Automerge change: a change cannot be split
	// across frames, so a write that makes a larger one is refused.
	maxChangeBytes = 3 << 20
	// frameBudget bounds the change bytes of one frame; a record with more
	// is sent in parts (Partial entries), split between changes.
	frameBudget = 3 << 20
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
// but the last are Partial (no heads); each part is a frame of its own.
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
		emit := func(last bool) {
			e := recordChanges{Collection: rc.Collection, ID: rc.ID, Changes: part, Partial: !last}
			if last {
				e.Heads = rc.Heads
			}
			groups = append(groups, []recordChanges{e})
			part = nil
		}
		for _, c := range chunks {
			if len(part) > 0 && len(part)+len(c) > budget {
				emit(false)
			}
			part = append(part, c...)
		}
		emit(true)
	}
	flush()
	return groups, nil
}
