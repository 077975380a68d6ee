package storage

import (
	"errors"
	"time"
)

// Limits checked before anything is stored or allocated.
const (
	maxNameLen  = 1024     // collection, id, namespace
	maxAttrsLen = 64 << 10 // RecordMeta.Attrs
	maxHeads    = 4096
	maxChunks   = 1 << 16
	maxValueLen = 256 << 20 // one chunk, slot value or log entry
	// inlineMax: the largest snapshot a meta may hold inside its value
	// instead of its own chunk key (format version 3, header.go: 2 KiB;
	// version 2 stores hold at most 1 KiB). Decoding accepts up to this.
	inlineMax = 2048
	// inlineWrite: a record's first snapshot of up to this size is
	// written inside the meta (one Badger entry less per small record); a
	// larger one gets a chunk. Small enough that a meta with its inline
	// snapshot stays under the default ValueThreshold (1 KiB), so the
	// metas, which List and the reconciliation scan, stay in the LSM tree
	// and the documents of larger records go to the value log.
	inlineWrite = 512
)

// RecordMeta describes a stored record.
type RecordMeta struct {
	Collection, ID   string
	Created, Updated time.Time
	Deleted          bool
	Seq              uint64   // change-feed position of this record's latest change
	Heads            [][]byte // change hashes, HeadSize bytes each (opaque to storage)
	Size             int      // bytes of stored Automerge data (snapshot + incrementals)
	Attrs            []byte   // opaque small per-record bytes for upper layers (sealed with the meta)
}

// RecordWrite is one record change in a Batch.
type RecordWrite struct {
	Collection, ID string
	// Changes are Automerge incremental bytes to append (doc.SaveIncremental()
	// or automerge.SaveChanges output); may be empty for a meta-only write.
	// They should hold only changes not stored yet: automerge-go's
	// SaveIncremental right after Load returns the whole history
	// (crdt.Doc.SaveIncremental does not).
	Changes []byte
	// Snapshot returns the full doc.Save() including Changes. Storage calls it
	// when there is no snapshot yet or when it compacts (the incrementals
	// outweigh the snapshot); it may be called more than once if the
	// transaction is retried. If nil, the first write's Changes are stored
	// as the record's document (storage does not parse them: the caller
	// vouches they load), and the record is never compacted.
	Snapshot func() ([]byte, error)
	// Heads replace the stored heads; nil keeps them. Each is a change
	// hash of HeadSize bytes (storage does not interpret them); another
	// length is ErrInvalid.
	Heads [][]byte
	// Deleted and Attrs replace the stored values on every write.
	Deleted bool
	Attrs   []byte
	// Time is the Updated time (zero => Options.Now()). Created is set on the
	// first write.
	Time time.Time

	created time.Time // import: explicit Created for a new record
	ifSeq   *uint64   // import: the record's Seq must still be this (0 = absent)
}

// SlotWrite puts or deletes one slot in a Batch.
type SlotWrite struct {
	Namespace, Key string
	Value          []byte
	Delete         bool

	ifAbsent bool      // import: write only if the slot does not exist
	wrote    *bool     // import: reports whether it was written
	_        [0]func() // not comparable
}

// Batch is applied in one Badger transaction, atomically, when it fits in
// one (about 15% of Sizes.MemTableSize in bytes). A larger batch is
// applied in several, in order, records then slots: each record is whole,
// and a crash in between leaves a prefix written, so the last slot (put
// the one that marks the batch done last) never commits ahead of the rest
// (Write).
type Batch struct {
	Records []RecordWrite
	Slots   []SlotWrite
}

// errStale reports a failed ifSeq precondition.
var errStale = errors.New("storage: record changed concurrently")
