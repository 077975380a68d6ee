package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Wire format of a frame on a byte stream: a 4-byte big-endian length, then
// that many bytes. A fixed-width prefix has exactly one encoding per length
// (a varint has several) and is checked against the limit as soon as its 4
// bytes are in.
const prefixLen = 4

// readChunk bounds the first allocation for a frame body: memory grows with
// the bytes that actually arrive, so a peer that announces a large frame and
// sends nothing pins at most readChunk bytes.
const readChunk = 64 << 10

// coalesceLimit: frames up to this size are written with their prefix in one
// Write call (one TLS record); larger ones in two.
const coalesceLimit = 32 << 10

// maxEmptyReads mirrors bufio's guard against readers that return 0, nil
// forever.
const maxEmptyReads = 100

// WriteFrame writes frame to w with its length prefix. It returns
// ErrFrameTooLarge (and writes nothing) when len(frame) exceeds limit; a
// limit <= 0 means DefaultMaxFrame.
func WriteFrame(w io.Writer, frame []byte, limit int) error {
	limit = maxOrDefault(limit)
	if len(frame) > limit || uint64(len(frame)) > math.MaxUint32 {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(frame), limit)
	}
	if len(frame) <= coalesceLimit {
		buf := make([]byte, prefixLen+len(frame))
		binary.BigEndian.PutUint32(buf, uint32(len(frame)))
		copy(buf[prefixLen:], frame)
		_, err := w.Write(buf)
		return err
	}
	var hdr [prefixLen]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(frame)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(frame)
	return err
}

// ReadFrame reads one frame written by WriteFrame. A limit <= 0 means
// DefaultMaxFrame.
//
// It returns io.EOF (unwrapped) when r ends cleanly before a frame starts; an
// error wrapping io.ErrUnexpectedEOF when r ends inside a frame; an error
// wrapping ErrFrameTooLarge when the prefix announces more than limit bytes,
// before anything is allocated for the body. The body buffer starts at no
// more than 64 KiB and grows only as bytes arrive, never beyond the
// announced length.
func ReadFrame(r io.Reader, limit int) ([]byte, error) {
	var fr frameReader
	return fr.next(r, maxOrDefault(limit))
}

// frameReader reads frames and keeps its progress across errors, so a read
// interrupted by a deadline (a cancelled context) resumes where it stopped
// instead of losing the stream's framing.
type frameReader struct {
	hdr  [prefixLen]byte
	nh   int    // header bytes read
	body []byte // len(body) is the allocated part of the frame
	nb   int    // body bytes read

	allocated int // bytes allocated for bodies so far (for tests)
}

func (fr *frameReader) next(r io.Reader, limit int) ([]byte, error) {
	empty := 0
	for fr.nh < prefixLen {
		k, err := r.Read(fr.hdr[fr.nh:])
		fr.nh += k
		if fr.nh == prefixLen {
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if fr.nh == 0 {
					return nil, io.EOF
				}
				return nil, fmt.Errorf("transport: truncated frame prefix (%d of %d bytes): %w", fr.nh, prefixLen, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if k == 0 {
			if empty++; empty >= maxEmptyReads {
				return nil, io.ErrNoProgress
			}
		}
	}
	n := binary.BigEndian.Uint32(fr.hdr[:])
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("%w: peer announced %d bytes, limit %d", ErrFrameTooLarge, n, limit)
	}
	size := int(n)
	if fr.body == nil {
		fr.body = make([]byte, min(size, readChunk))
		fr.allocated += len(fr.body)
	}
	for fr.nb < size {
		if fr.nb == len(fr.body) {
			grown := make([]byte, min(size, 2*len(fr.body)))
			copy(grown, fr.body)
			fr.body = grown
			fr.allocated += len(grown)
		}
		k, err := r.Read(fr.body[fr.nb:])
		fr.nb += k
		if fr.nb == size {
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("transport: truncated frame (%d of %d bytes): %w", fr.nb, size, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if k == 0 {
			if empty++; empty >= maxEmptyReads {
				return nil, io.ErrNoProgress
			}
		}
	}
	frame := fr.body
	*fr = frameReader{allocated: fr.allocated}
	return frame, nil
}
