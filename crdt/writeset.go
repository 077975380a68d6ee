package crdt

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/ferrysync/ferry/internal/cborx"
	"github.com/fxamacker/cbor/v2"
)

// WriteMeta is the origin ferry records with every write: the field's
// hybrid-logical-clock timestamp, the writing replica and its priority.
type WriteMeta struct {
	_         struct{} `cbor:",toarray"`
	HLC       Timestamp
	ReplicaID string
	Priority  int
}

// op is a write-set entry's operation.
type op uint8

const (
	opSet       op = 1 // field set to a value (scalar, list, text, counter; a map only in resolutions)
	opDel       op = 2 // field deleted
	opMkMap     op = 3 // new map object created at the field
	opEdit      op = 4 // in-place edit of the list/text/counter at the field
	opDelRecord op = 5 // whole record deleted (path "")
)

func (o op) String() string {
	switch o {
	case opSet:
		return "set"
	case opDel:
		return "del"
	case opMkMap:
		return "mkmap"
	case opEdit:
		return "edit"
	case opDelRecord:
		return "delrec"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// wsEntry is one entry of a change's write-set.
type wsEntry struct {
	Path        string          `cbor:"p"`           // JSON pointer of the field
	Op          op              `cbor:"o"`           // operation
	Val         cbor.RawMessage `cbor:"v,omitempty"` // canonical value (set)
	Meta        *WriteMeta      `cbor:"m,omitempty"` // overrides the change's meta (resolutions, repairs)
	Resolves    string          `cbor:"x,omitempty"` // conflict id this entry resolves
	Provisional bool            `cbor:"q,omitempty"` // provisional (user-policy) resolution
	Conflict    cbor.RawMessage `cbor:"c,omitempty"` // the conflict record, on provisional resolutions
	By          string          `cbor:"b,omitempty"` // who decided a resolution
	Repair      bool            `cbor:"r,omitempty"` // re-application of a write lost to a map clash
	Supersedes  []string        `cbor:"s,omitempty"` // earlier conflict ids a resolved conflict replaced
}

// writeSet is what ferry puts in every change's commit message.
type writeSet struct {
	V int       `cbor:"v"` // format version (1)
	M WriteMeta `cbor:"m"` // the change's meta
	E []wsEntry `cbor:"e"`
	// G is the change's generation: 1 + the largest generation of its
	// dependencies (0: unknown). It orders the merge-base walk.
	G uint64 `cbor:"g,omitempty"`
}

// wsPrefix starts every ferry commit message; the rest is base64url (no
// padding) of the CBOR write-set.
const wsPrefix = "ferry.ws1:"

const maxWriteSetEntries = 1 << 20

func encodeWriteSet(ws *writeSet) string {
	ws.V = 1
	b, err := encMode.Marshal(ws)
	if err != nil {
		panic(fmt.Sprintf("crdt: encoding write-set: %v", err)) // only plain types inside
	}
	return wsPrefix + base64.RawURLEncoding.EncodeToString(b)
}

var wsDecMode = cborx.NewDec(cbor.DecOptions{
	MaxNestedLevels:   2*maxDepth + 16,
	MaxArrayElements:  maxWriteSetEntries,
	MaxMapPairs:       1 << 20,
	ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
})

// decodeWriteSet parses a commit message. ok is false for messages that are
// not ferry write-sets (plain Automerge clients); err reports a message that
// claims to be one but is malformed.
func decodeWriteSet(msg string) (ws *writeSet, ok bool, err error) {
	rest, found := strings.CutPrefix(msg, wsPrefix)
	if !found {
		return nil, false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return nil, true, fmt.Errorf("%w: write-set: %w", ErrBadDocument, err)
	}
	ws = new(writeSet)
	if err := wsDecMode.Unmarshal(b, ws); err != nil {
		return nil, true, fmt.Errorf("%w: write-set: %w", ErrBadDocument, err)
	}
	if ws.V != 1 {
		return nil, true, fmt.Errorf("%w: write-set version %d", ErrBadDocument, ws.V)
	}
	for i := range ws.E {
		e := &ws.E[i]
		if e.Op < opSet || e.Op > opDelRecord {
			return nil, true, fmt.Errorf("%w: write-set op %d", ErrBadDocument, e.Op)
		}
		if e.Path != "" && e.Path[0] != '/' {
			return nil, true, fmt.Errorf("%w: write-set path %q", ErrBadDocument, e.Path)
		}
		if (e.Path == "") != (e.Op == opDelRecord) {
			return nil, true, fmt.Errorf("%w: write-set root path with op %s", ErrBadDocument, e.Op)
		}
	}
	return ws, true, nil
}

// fieldMeta is the hidden per-field metadata stored in the document under
// MetaPrefix+":"+pointer.
type fieldMeta struct {
	_       struct{} `cbor:",toarray"`
	Meta    WriteMeta
	Deleted bool
}

func metaKey(ptr string) string { return MetaPrefix + ":" + ptr }

func encodeFieldMeta(m fieldMeta) []byte {
	b, err := encMode.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("crdt: encoding field meta: %v", err))
	}
	return b
}

func decodeFieldMeta(b []byte) (fieldMeta, error) {
	var m fieldMeta
	err := wsDecMode.Unmarshal(b, &m)
	return m, err
}
