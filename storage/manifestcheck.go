package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// Badger's MANIFEST is an 8-byte header followed by change sets, each
// framed as | length (4, big-endian) | CRC-32C (4) | protobuf (length) |.
// Badger's replay stops without an error where a frame claims more bytes
// than the file has left, taking it for a torn append; everything after,
// and every table only those change sets name, is then dropped (the tables
// are deleted as orphans). A bit flipped in a length field looks the same.
// checkManifest tells the two apart before Badger opens: a torn append is
// a prefix of a frame, so no prefix of what follows the header matches its
// CRC; a damaged length leaves the whole change set in place, and some
// prefix of the rest matches the CRC exactly.
const manifestName = "MANIFEST"

func checkManifest(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check manifest: %w", err)
	}
	return scanManifest(b)
}

// scanManifest returns ErrCorrupt when a frame's length field runs past the
// end of b while a complete change set (some prefix of the remaining bytes
// matching the frame's CRC) is there. Other damage (bad header, CRC
// mismatch) is left to Badger, which reports it.
func scanManifest(b []byte) error {
	const header = 8
	if len(b) < header {
		return nil
	}
	off := header
	for len(b)-off >= 8 {
		length := int(binary.BigEndian.Uint32(b[off:]))
		sum := binary.BigEndian.Uint32(b[off+4:])
		rest := b[off+8:]
		if length <= len(rest) {
			off += 8 + length
			continue
		}
		// Badger would stop here. A torn append ends the file; a damaged
		// length has a whole change set behind it.
		for n := 0; n <= len(rest); n++ {
			if crc32.Checksum(rest[:n], castagnoli) == sum {
				return fmt.Errorf("MANIFEST is damaged at offset %d and the tables it names would be dropped; "+
					"restore from a backup (ferry import BACKUP) or sync from a peer into a new store: %w", off, ErrCorrupt)
			}
		}
		return nil
	}
	return nil
}
