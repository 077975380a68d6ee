package transport

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes to the frame reader under an arbitrary
// limit. It must never panic, never return a frame above the limit, never
// allocate for a frame more than a small multiple of the bytes that arrived
// (nothing for a rejected prefix), and the
// frames it returns must re-encode to exactly the bytes it consumed.
func FuzzReadFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, limit uint32) {
		lim := int(limit % (1 << 20)) // 0 means DefaultMaxFrame
		effective := maxOrDefault(lim)
		r := bytes.NewReader(data)
		var fr frameReader
		var reencoded bytes.Buffer
		for {
			before := fr.allocated
			start := len(data) - r.Len()
			frame, err := fr.next(r, effective)
			grew := fr.allocated - before
			if err != nil {
				switch {
				case err == io.EOF:
					if start != len(data) {
						t.Fatalf("io.EOF with %d bytes unread", len(data)-start)
					}
				case errors.Is(err, ErrFrameTooLarge):
					if grew != 0 {
						t.Fatalf("allocated %d bytes for a rejected frame", grew)
					}
				case errors.Is(err, io.ErrUnexpectedEOF):
					received := len(data) - start - prefixLen
					// Doubling from one chunk: everything allocated (garbage
					// included) stays under 4x what arrived.
					if grew > max(readChunk, 4*received) {
						t.Fatalf("allocated %d bytes for a truncated frame of which %d bytes arrived", grew, received)
					}
				default:
					t.Fatalf("unexpected error: %v", err)
				}
				break
			}
			if len(frame) > effective || cap(frame) > effective {
				t.Fatalf("frame len %d cap %d above limit %d", len(frame), cap(frame), effective)
			}
			if grew < len(frame) || grew > 3*len(frame) {
				t.Fatalf("allocated %d bytes for a frame of %d", grew, len(frame))
			}
			if err := WriteFrame(&reencoded, frame, effective); err != nil {
				t.Fatalf("re-encoding a frame that was read: %v", err)
			}
		}
		consumed := data[:len(data)-r.Len()]
		if !bytes.HasPrefix(consumed, reencoded.Bytes()) {
			t.Fatalf("frames read do not re-encode to the input")
		}
		// The stateless helper agrees with the frame reader on the first frame.
		first, err1 := ReadFrame(bytes.NewReader(data), lim)
		var fr2 frameReader
		second, err2 := fr2.next(bytes.NewReader(data), effective)
		if (err1 == nil) != (err2 == nil) || !bytes.Equal(first, second) {
			t.Fatalf("ReadFrame and frameReader disagree: %v / %v", err1, err2)
		}
	})
}
