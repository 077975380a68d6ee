package storage

import (
	"errors"
	"io"
	"os"
	"syscall"
)

const (
	whenceData = 3 // SEEK_DATA
	whenceHole = 4 // SEEK_HOLE
)

// dataEnd returns the end of the last allocated extent of f (size when the
// file system cannot tell): bytes after it are a hole and read as zeros.
func dataEnd(f *os.File, size int64) int64 {
	end, off := int64(0), int64(0)
	for off < size {
		d, err := f.Seek(off, whenceData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return size // SEEK_DATA unsupported
		}
		h, err := f.Seek(d, whenceHole)
		if err != nil {
			return size
		}
		end, off = h, h
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return size
	}
	return min(end, size)
}
