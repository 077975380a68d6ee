package storage

import (
	"errors"
	"fmt"

	"github.com/automerge/automerge-go"
)

// automerge-go panics on some internal paths ("must"); every call that takes
// bytes from disk or a backup goes through these guards.

var errAMPanic = errors.New("automerge panicked")

func amGuard[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, fmt.Errorf("%w: %v", errAMPanic, r)
		}
	}()
	return f()
}

func amLoad(b []byte) (*automerge.Doc, error) {
	return amGuard(func() (*automerge.Doc, error) { return automerge.Load(b) })
}

// amResave loads b and saves it as one compact document.
func amResave(b []byte) ([]byte, error) {
	return amGuard(func() ([]byte, error) {
		d, err := automerge.Load(b)
		if err != nil {
			return nil, err
		}
		return d.Save(), nil
	})
}
