package storage

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func manifestFrame(payload []byte) []byte {
	f := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint32(f, uint32(len(payload)))
	binary.BigEndian.PutUint32(f[4:], crc32.Checksum(payload, castagnoli))
	return append(f, payload...)
}

// TestScanManifest: a length field flipped so that it runs past the end of
// the file is damage (Badger would drop the change set and delete its
// tables without a word); a torn last append is not.
func TestScanManifest(t *testing.T) {
	head := []byte("Bdgr\x00\x01\x00\x08")
	one, two := manifestFrame([]byte("first change set")), manifestFrame([]byte("second change set, longer"))
	good := append(append(append([]byte(nil), head...), one...), two...)
	if err := scanManifest(good); err != nil {
		t.Fatalf("intact manifest: %v", err)
	}
	for cut := len(head) + len(one) + 1; cut < len(good); cut++ {
		if err := scanManifest(good[:cut]); err != nil {
			t.Fatalf("torn at %d: %v, want nil", cut, err)
		}
	}
	for _, frame := range []int{len(head), len(head) + len(one)} {
		for bit := 0; bit < 32; bit++ {
			b := append([]byte(nil), good...)
			b[frame+bit/8] ^= 1 << (bit % 8)
			length := int(binary.BigEndian.Uint32(b[frame:]))
			err := scanManifest(b)
			if length > len(b)-frame-8 {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("length of frame at %d flipped (bit %d) past the end: %v, want ErrCorrupt", frame, bit, err)
				}
			} else if err != nil {
				t.Fatalf("length of frame at %d flipped (bit %d) within the file: %v, want nil (Badger reports the CRC mismatch)", frame, bit, err)
			}
		}
	}
}
