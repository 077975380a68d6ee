package crdt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/automerge/automerge-go"
)

// Automerge's binary chunks: magic, 4-byte checksum (the first bytes of the
// SHA-256 of what follows), chunk type, ULEB128 length, data. The SHA-256
// of an uncompressed change chunk's type, length and data is the change
// hash.
var chunkMagic = []byte{0x85, 0x6f, 0x4a, 0x83}

const (
	chunkDocument         = 0
	chunkChange           = 1
	chunkCompressedChange = 2
)

var errChunk = errors.New("malformed chunk")

// changeChunks validates that raw is a sequence of change chunks with valid
// checksums and returns the hashes of the uncompressed ones.
func changeChunks(raw []byte) ([]automerge.ChangeHash, error) {
	hashes, docs, err := walkChunks(raw)
	if err == nil && docs {
		err = fmt.Errorf("%w: chunk type %d is not a change", errChunk, chunkDocument)
	}
	return hashes, err
}

// walkChunks validates that raw is a sequence of document and change
// chunks with valid checksums; it returns the hashes of the uncompressed
// change chunks and whether any chunk is a document (whose changes have
// no hash on the wire: a document chunk is compressed columnar storage).
func walkChunks(raw []byte) (hashes []automerge.ChangeHash, docs bool, err error) {
	for len(raw) > 0 {
		if len(raw) < 9 || !bytes.Equal(raw[:4], chunkMagic) {
			return nil, false, fmt.Errorf("%w: bad magic", errChunk)
		}
		typ := raw[8]
		n, k := binary.Uvarint(raw[9:])
		if k <= 0 || n > uint64(len(raw)) {
			return nil, false, fmt.Errorf("%w: bad length", errChunk)
		}
		end := 9 + k + int(n)
		if end > len(raw) {
			return nil, false, fmt.Errorf("%w: truncated", errChunk)
		}
		sum := sha256.Sum256(raw[8:end])
		if !bytes.Equal(sum[:4], raw[4:8]) {
			return nil, false, fmt.Errorf("%w: checksum mismatch", errChunk)
		}
		switch typ {
		case chunkChange:
			hashes = append(hashes, automerge.ChangeHash(sum))
		case chunkCompressedChange:
		case chunkDocument:
			docs = true
		default:
			return nil, false, fmt.Errorf("%w: unknown chunk type %d", errChunk, typ)
		}
		raw = raw[end:]
	}
	return hashes, docs, nil
}

// HoldsDocument reports whether raw is a well-formed sequence of chunks
// (see Mergeable) that holds a document chunk (a saved document: its
// changes in compressed columnar form), not only change chunks.
func HoldsDocument(raw []byte) bool {
	_, docs, err := walkChunks(raw)
	return err == nil && docs
}

// Mergeable reports whether raw is a sequence of chunks MergeChanges
// accepts (documents and changes, each with its checksum). Bytes stored
// from an import may hold chunks that Load reads but MergeChanges refuses
// (a compressed change chunk's checksum covers its uncompressed form).
func Mergeable(raw []byte) bool {
	_, _, err := walkChunks(raw)
	return err == nil
}
