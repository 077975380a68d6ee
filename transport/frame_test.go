package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"
	"testing/iotest"
)

func prefix(n uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, n)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestFrameRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 100, coalesceLimit, coalesceLimit + 1, readChunk - 1, readChunk, readChunk + 1, 3*readChunk + 7, DefaultMaxFrame}
	var buf bytes.Buffer
	for _, n := range sizes {
		if err := WriteFrame(&buf, pattern(n), 0); err != nil {
			t.Fatalf("WriteFrame(%d bytes): %v", n, err)
		}
	}
	wire := buf.Bytes()
	readers := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(wire) },
		"one-byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(wire)) },
		"data-err": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(wire)) },
		"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(wire)) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			r := mk()
			for _, n := range sizes {
				got, err := ReadFrame(r, 0)
				if err != nil {
					t.Fatalf("ReadFrame (want %d bytes): %v", n, err)
				}
				if !bytes.Equal(got, pattern(n)) {
					t.Fatalf("frame of %d bytes came back as %d different bytes", n, len(got))
				}
				if got == nil {
					t.Fatalf("frame of %d bytes came back nil", n)
				}
			}
			if _, err := ReadFrame(r, 0); err != io.EOF {
				t.Fatalf("after the last frame: err = %v, want io.EOF", err)
			}
		})
	}
}

func TestFrameMaxBoundary(t *testing.T) {
	const limit = 1000
	var buf bytes.Buffer
	if err := WriteFrame(&buf, pattern(limit), limit); err != nil {
		t.Fatalf("frame of exactly the limit: %v", err)
	}
	got, err := ReadFrame(&buf, limit)
	if err != nil || len(got) != limit {
		t.Fatalf("read frame of exactly the limit: %d bytes, %v", len(got), err)
	}

	buf.Reset()
	err = WriteFrame(&buf, pattern(limit+1), limit)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("WriteFrame(limit+1) = %v, want ErrFrameTooLarge", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("WriteFrame(limit+1) wrote %d bytes, want none", buf.Len())
	}

	wire := append(prefix(limit+1), pattern(limit+1)...)
	if _, err := ReadFrame(bytes.NewReader(wire), limit); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ReadFrame(limit+1) = %v, want ErrFrameTooLarge", err)
	}
}

// bytesAllocated runs f and returns the bytes the runtime allocated meanwhile.
func bytesAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReadFrameOversizeRejectedBeforeAllocation(t *testing.T) {
	const claim = 1 << 30 // 1 GiB
	// A tiny reader: the prefix and ten bytes, nothing like the claim.
	wire := append(prefix(claim), "0123456789"...)

	var err error
	allocs := testing.AllocsPerRun(20, func() {
		_, err = ReadFrame(bytes.NewReader(wire), DefaultMaxFrame)
	})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if allocs > 8 {
		t.Errorf("rejecting an oversized prefix made %v allocations, want a handful (error only)", allocs)
	}
	n := bytesAllocated(func() { _, err = ReadFrame(bytes.NewReader(wire), DefaultMaxFrame) })
	if n > 64<<10 {
		t.Errorf("rejecting a 1 GiB claim allocated %d bytes", n)
	}

	// Even under a limit that admits the claim, memory follows the bytes
	// that arrive, not the announced length.
	fr := frameReader{}
	_, err = fr.next(bytes.NewReader(wire), 2<<30)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated 1 GiB frame: err = %v, want io.ErrUnexpectedEOF", err)
	}
	if fr.allocated > readChunk {
		t.Errorf("truncated 1 GiB claim with 10 bytes of body allocated %d bytes, want <= %d", fr.allocated, readChunk)
	}
	n = bytesAllocated(func() { _, err = ReadFrame(bytes.NewReader(wire), 2<<30) })
	if n > 2*readChunk {
		t.Errorf("truncated 1 GiB claim allocated %d bytes in all", n)
	}
}

func TestReadFrameTruncated(t *testing.T) {
	cases := []struct {
		name string
		wire []byte
	}{
		{"one prefix byte", []byte{0}},
		{"three prefix bytes", prefix(5)[:3]},
		{"prefix only", prefix(5)},
		{"short body", append(prefix(5), "abc"...)},
		{"short large body", append(prefix(readChunk*3), pattern(readChunk*2)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{bytes.NewReader(tc.wire), iotest.OneByteReader(bytes.NewReader(tc.wire))} {
				_, err := ReadFrame(r, 0)
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
				}
			}
		})
	}
	if _, err := ReadFrame(bytes.NewReader(nil), 0); err != io.EOF {
		t.Fatalf("empty stream: err = %v, want io.EOF", err)
	}
}

// stutterReader fails with a deadline error once after every `every` bytes.
type stutterReader struct {
	r      io.Reader
	every  int
	since  int
	failed int
}

func (s *stutterReader) Read(p []byte) (int, error) {
	if s.since >= s.every {
		s.since = 0
		s.failed++
		return 0, os.ErrDeadlineExceeded
	}
	p = p[:min(len(p), s.every-s.since)]
	n, err := s.r.Read(p)
	s.since += n
	return n, err
}

func TestFrameReaderResumesAfterTimeouts(t *testing.T) {
	var buf bytes.Buffer
	want := [][]byte{pattern(3), pattern(readChunk*2 + 5), {}, pattern(17)}
	for _, f := range want {
		if err := WriteFrame(&buf, f, 0); err != nil {
			t.Fatal(err)
		}
	}
	sr := &stutterReader{r: &buf, every: 3}
	var fr frameReader
	var got [][]byte
	for {
		f, err := fr.next(sr, DefaultMaxFrame)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f)
	}
	if sr.failed < 10 {
		t.Fatalf("only %d interruptions; the test exercises nothing", sr.failed)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("frames differ after interrupted reads")
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReadFrameNoProgress(t *testing.T) {
	if _, err := ReadFrame(zeroReader{}, 0); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("err = %v, want io.ErrNoProgress", err)
	}
}

func TestWriteFrameErrors(t *testing.T) {
	fw := failWriter{after: 2}
	if err := WriteFrame(&fw, pattern(10), 0); err == nil {
		t.Fatal("WriteFrame to a failing writer returned nil")
	}
	fw = failWriter{after: prefixLen}
	if err := WriteFrame(&fw, pattern(coalesceLimit+1), 0); err == nil {
		t.Fatal("WriteFrame of a large frame to a writer failing after the prefix returned nil")
	}
}

type failWriter struct{ after, n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.after {
		k := max(w.after-w.n, 0)
		w.n += k
		return k, errors.New("disk on fire")
	}
	w.n += len(p)
	return len(p), nil
}
