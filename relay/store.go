package relay

import (
	"bytes"
	"fmt"
	"net/http"
)

// The state the relay keeps per space, whatever stores it (jsstore.go on
// NATS JetStream): the metadata, each member's state, and the refusals
// the store answers with.

type spaceMeta struct {
	Members []byte      `cbor:"1,keyasint"` // signed member list (wireSigned), as accepted
	Version uint64      `cbor:"2,keyasint"`
	Head    uint64      `cbor:"3,keyasint"` // last seq assigned
	Low     uint64      `cbor:"4,keyasint"` // every seq <= Low is compacted
	Bundles int64       `cbor:"5,keyasint"`
	Bytes   int64       `cbor:"6,keyasint"`
	Peers   []peerState `cbor:"7,keyasint"`
	Creator []byte      `cbor:"8,keyasint"`
	Epoch   uint64      `cbor:"9,keyasint,omitempty"` // newest key epoch recorded
}

// peerState is per key that is or was a member. A former member's entry
// keeps its counters so that it can be re-added; it is forgotten only once
// it holds no bundles and the list is over maxPeers.
type peerState struct {
	Key       []byte `cbor:"1,keyasint"`
	Member    bool   `cbor:"2,keyasint"`
	Cursor    uint64 `cbor:"3,keyasint"` // acknowledged seq
	HW        uint64 `cbor:"4,keyasint"` // highest counter stored
	Compacted uint64 `cbor:"5,keyasint"` // highest counter compacted
	Bytes     int64  `cbor:"6,keyasint"`
	Bundles   int64  `cbor:"7,keyasint"`
	LastAck   int64  `cbor:"8,keyasint,omitempty"` // unix ms of its last ack (or addition)
}

const maxPeers = 4 * MaxMembers

func (m *spaceMeta) peer(key []byte) *peerState {
	for i := range m.Peers {
		if bytes.Equal(m.Peers[i].Key, key) {
			return &m.Peers[i]
		}
	}
	return nil
}

// memberOr is the member state of key, or the refusal: errRemoved for a
// former member, errNoSpace for a key never in the list.
func (m *spaceMeta) memberOr(key []byte) (*peerState, error) {
	p := m.peer(key)
	switch {
	case p == nil:
		return nil, errNoSpace
	case !p.Member:
		return nil, errRemoved
	}
	return p, nil
}

// lowWater is the highest seq every member has acknowledged.
func (m *spaceMeta) lowWater() uint64 {
	low, any := uint64(0), false
	for _, p := range m.Peers {
		if p.Member && (!any || p.Cursor < low) {
			low, any = p.Cursor, true
		}
	}
	return min(low, m.Head)
}

// httpError is a refusal with its HTTP status and JSON error code.
type httpError struct {
	status   int
	code     string
	msg      string
	expected uint64
	now      int64 // relay time (unix ms), for stale timestamps
}

func (e *httpError) Error() string { return e.msg }

func herr(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

var (
	errNoSpace = herr(http.StatusForbidden, codeNotMember, "not a member of this space")
	errRemoved = herr(http.StatusForbidden, codeRemoved, "removed from this space")
)

// pushResult is the outcome of storing a bundle.
type pushResult struct {
	seq uint64
	dup bool
}

// compactBatch bounds the bundles one compaction step deletes.
const compactBatch = 256
