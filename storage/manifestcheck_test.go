package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
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
	// Badger's first change set is often empty (length 0, CRC 0).
	zero, one, two := manifestFrame(nil), manifestFrame([]byte("first change set")), manifestFrame([]byte("second change set, longer"))
	good := append(append(append(append([]byte(nil), head...), zero...), one...), two...)
	if err := scanManifest(good); err != nil {
		t.Fatalf("intact manifest: %v", err)
	}
	for cut := len(head) + len(zero) + len(one) + 1; cut < len(good); cut++ {
		if err := scanManifest(good[:cut]); err != nil {
			t.Fatalf("torn at %d: %v, want nil", cut, err)
		}
	}
	for _, frame := range []int{len(head), len(head) + len(zero), len(head) + len(zero) + len(one)} {
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

// TestManifestEveryBitFlip flips every bit of a real store's MANIFEST in
// turn: each flip must leave the store reading exactly as before or be
// refused with ErrCorrupt, never an emptier store without an error (as a
// flipped length field did: Badger dropped the change sets after it).
func TestManifestEveryBitFlip(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	populate(t, s, 30)
	s.Close()
	ref, _ := Open(ctx, dir, testOpts())
	good, _ := readEverything(ref)
	ref.Close()
	orig, _ := os.ReadFile(filepath.Join(dir, "MANIFEST"))
	for pos := 0; pos < len(orig); pos++ {
		for bit := 0; bit < 8; bit++ {
			work := t.TempDir()
			copyDir(t, dir, work)
			b := append([]byte(nil), orig...)
			b[pos] ^= 1 << bit
			os.WriteFile(filepath.Join(work, "MANIFEST"), b, 0o600)
			st, err := Open(ctx, work, testOpts())
			var got logical
			if err == nil {
				got, err = readEverything(st)
				st.Close()
			}
			if err == nil && !reflect.DeepEqual(got, good) {
				t.Errorf("pos %d bit %d: silent", pos, bit)
			} else if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Errorf("pos %d bit %d: %v", pos, bit, err)
			}
		}
	}
}
