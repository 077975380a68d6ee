package crdt

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/internal/names"
	"github.com/fxamacker/cbor/v2"
)

// ConflictKind classifies a semantic conflict.
type ConflictKind uint8

const (
	// ConflictValue: the same field set to different values concurrently.
	ConflictValue ConflictKind = iota + 1
	// ConflictEditDelete: a field edited on one side while it, a parent or
	// the whole record was deleted on the other.
	ConflictEditDelete
	// ConflictType: a field set to values of different kinds (a number vs a
	// map, a list vs a text, ...).
	ConflictType
)

func (k ConflictKind) String() string {
	switch k {
	case ConflictValue:
		return "value"
	case ConflictEditDelete:
		return "edit-delete"
	case ConflictType:
		return "type"
	}
	return fmt.Sprintf("ConflictKind(%d)", uint8(k))
}

// Candidate is one side's version of a conflicting field.
type Candidate struct {
	Value     any       // application value (as Get returns it); nil when Deleted
	Kind      ValueKind // KindNone when Deleted
	Deleted   bool
	HLC       Timestamp
	ReplicaID string
	Priority  int
	// Change is the change that wrote this version.
	Change automerge.ChangeHash
	// FromPlainAutomerge: written by a client without ferry metadata; HLC
	// is the change's timestamp, ReplicaID "automerge:" + its actor id.
	FromPlainAutomerge bool
	// Resolves is set when this version was itself a resolution of an
	// earlier conflict (which this conflict then supersedes).
	Resolves string

	node *node
	// contrib: further hashes the value depends on (the side's heads when
	// the value was read from that side's state rather than a write-set).
	contrib []automerge.ChangeHash
}

// Meta returns the candidate's write metadata.
func (c *Candidate) Meta() WriteMeta {
	return WriteMeta{HLC: c.HLC, ReplicaID: c.ReplicaID, Priority: c.Priority}
}

// Field returns the value of a field of a map candidate (key path below the
// conflict's path), for policies that read the value, e.g. a priority field.
func (c *Candidate) Field(keys ...string) (any, bool) {
	n := c.node
	for _, k := range keys {
		if n == nil || n.k != KindMap {
			return nil, false
		}
		n = n.m[k]
	}
	if n == nil {
		return nil, false
	}
	return n.toGo(), true
}

// Conflict is a semantic conflict found by MergeRemote. Its ID is the same
// on every replica that detects it: a hash of the path and the sorted hashes
// of the candidate changes.
type Conflict struct {
	ID         string
	Path       string // JSON pointer of the field ("/profile/city")
	Kind       ConflictKind
	Candidates []Candidate // sorted by change hash
	// CRDTWinner is the index of the candidate Automerge itself shows when
	// exactly the candidates' changes are merged, or -1 when unknown. It is
	// -1 from MergeRemote and from decoding; Doc.FillCRDTWinner computes it
	// (O(history): only the merge policy needs it).
	CRDTWinner int
}

// Supersedes returns the ids of earlier conflicts that candidates of this
// one resolved: deciding this conflict decides those too.
func (c *Conflict) Supersedes() []string {
	seen := map[string]bool{}
	for _, cd := range c.Candidates {
		if cd.Resolves != "" {
			seen[cd.Resolves] = true
		}
	}
	if len(seen) == 0 {
		return nil
	}
	return sortedKeys(seen)
}

// PathKeys returns Path split into its keys.
func (c *Conflict) PathKeys() []string {
	keys, _ := splitPointer(c.Path)
	return keys
}

func conflictID(path string, hashes []automerge.ChangeHash) string {
	set := map[string]bool{}
	for _, h := range hashes {
		set[h.String()] = true
	}
	hs := sortedKeys(set)
	var in string
	if !strings.Contains(path, "\n") {
		// The form every id so far was made with (resolutions write ids
		// into documents, so it must not change): unambiguous while the
		// path holds no newline, since change hashes are hex.
		in = "ferry-conflict/1\n" + path + "\n" + strings.Join(hs, "\n")
	} else {
		// A map key may hold a newline: "/x\n<h1>" with [h2] would meet
		// "/x" with [h1, h2] in the form above. Length-prefixed parts
		// under another label meet neither.
		in = "ferry-conflict/2" + names.Key(append([]string{path}, hs...)...)
	}
	sum := sha256.Sum256([]byte(in))
	return hex.EncodeToString(sum[:16])
}

// finish sorts the candidates, sets the ID and the kind.
func (c *Conflict) finish() {
	sort.SliceStable(c.Candidates, func(i, j int) bool {
		a, b := c.Candidates[i], c.Candidates[j]
		if a.Change != b.Change {
			return string(a.Change[:]) < string(b.Change[:])
		}
		return a.Deleted && !b.Deleted
	})
	var hashes []automerge.ChangeHash
	anyDel, anyVal := false, false
	classes := map[ValueKind]bool{}
	for _, cd := range c.Candidates {
		hashes = append(hashes, cd.Change)
		hashes = append(hashes, cd.contrib...)
		if cd.Deleted {
			anyDel = true
		} else {
			anyVal = true
			classes[cd.Kind.class()] = true
		}
	}
	c.ID = conflictID(c.Path, hashes)
	switch {
	case anyDel && anyVal:
		c.Kind = ConflictEditDelete
	case len(classes) > 1:
		c.Kind = ConflictType
	default:
		c.Kind = ConflictValue
	}
}

// ---- encoding ---------------------------------------------------------------

type candidateWire struct {
	_        struct{} `cbor:",toarray"`
	Value    cbor.RawMessage
	Deleted  bool
	Meta     WriteMeta
	Change   []byte
	Plain    bool
	Resolves string
}

type conflictWire struct {
	_          struct{} `cbor:",toarray"`
	V          int
	ID         string
	Path       string
	Kind       ConflictKind
	Candidates []candidateWire
	CRDTWinner int
}

// MarshalBinary encodes the conflict (canonical CBOR; values keep their
// kinds exactly).
func (c Conflict) MarshalBinary() ([]byte, error) {
	w := conflictWire{V: 1, ID: c.ID, Path: c.Path, Kind: c.Kind, CRDTWinner: -1}
	for _, cd := range c.Candidates {
		n := cd.node
		if n == nil && !cd.Deleted {
			var err error
			if n, err = fromGo(cd.Value); err != nil {
				return nil, err
			}
		}
		var val []byte
		if !cd.Deleted {
			val = n.encode()
		}
		w.Candidates = append(w.Candidates, candidateWire{
			Value: val, Deleted: cd.Deleted, Meta: cd.Meta(), Change: cd.Change[:],
			Plain: cd.FromPlainAutomerge, Resolves: cd.Resolves,
		})
	}
	return encMode.Marshal(w)
}

// UnmarshalBinary decodes MarshalBinary output.
func (c *Conflict) UnmarshalBinary(b []byte) error {
	var w conflictWire
	if err := wsDecMode.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: conflict: %w", ErrBadDocument, err)
	}
	if w.V != 1 {
		return fmt.Errorf("%w: conflict version %d", ErrBadDocument, w.V)
	}
	out := Conflict{ID: w.ID, Path: w.Path, Kind: w.Kind, CRDTWinner: w.CRDTWinner}
	if w.CRDTWinner < -1 || w.CRDTWinner >= len(w.Candidates) {
		return fmt.Errorf("%w: conflict winner index %d", ErrBadDocument, w.CRDTWinner)
	}
	for _, cw := range w.Candidates {
		if len(cw.Change) != len(automerge.ChangeHash{}) {
			return fmt.Errorf("%w: conflict candidate hash", ErrBadDocument)
		}
		cd := Candidate{Deleted: cw.Deleted, HLC: cw.Meta.HLC, ReplicaID: cw.Meta.ReplicaID,
			Priority: cw.Meta.Priority, FromPlainAutomerge: cw.Plain, Resolves: cw.Resolves}
		copy(cd.Change[:], cw.Change)
		if !cw.Deleted {
			n, err := decodeNode(cw.Value)
			if err != nil || n == nil {
				return fmt.Errorf("%w: conflict candidate value: %v", ErrBadDocument, err)
			}
			cd.node, cd.Value, cd.Kind = n, n.toGo(), n.k
		}
		out.Candidates = append(out.Candidates, cd)
	}
	*c = out
	return nil
}

func candidateFrom(n *node, deleted bool, meta WriteMeta, change automerge.ChangeHash, plain bool, resolves string) Candidate {
	cd := Candidate{Deleted: deleted || n == nil, HLC: meta.HLC, ReplicaID: meta.ReplicaID, Priority: meta.Priority,
		Change: change, FromPlainAutomerge: plain, Resolves: resolves}
	if !cd.Deleted {
		cd.node, cd.Value, cd.Kind = n, n.toGo(), n.k
	}
	return cd
}
