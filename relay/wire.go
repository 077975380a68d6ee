package relay

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"

	"github.com/ferrysync/ferry/internal/cborx"
	"github.com/fxamacker/cbor/v2"
)

// Wire messages are CBOR (core deterministic encoding, integer keys). The
// decoders forbid indefinite lengths, tags and unknown fields, and bound
// nesting, arrays and maps; byte strings are bounded by the body limit,
// which is checked before the body is read.
const (
	maxWireArray = 4096
	// MaxMembers is the largest member list a space may have.
	MaxMembers = 64
	// maxMembersBody bounds a membership request or response body.
	maxMembersBody = 16 << 10
	// maxSmallBody bounds small responses (push result, errors, status).
	maxSmallBody = 64 << 10
)

var (
	wireEnc = cborx.Enc
	wireDec = cborx.NewDec(cbor.DecOptions{
		MaxNestedLevels:   6,
		MaxArrayElements:  maxWireArray,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	})
)

func marshal(v any) []byte {
	b, err := wireEnc.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("relay: encode %T: %v", v, err)) // only plain structs are encoded
	}
	return b
}

// wireEnvelope is one bundle in a pull response.
type wireEnvelope struct {
	Seq    uint64 `cbor:"1,keyasint"`
	Sender []byte `cbor:"2,keyasint"`
	Data   []byte `cbor:"3,keyasint"`
}

// pullResponse answers GET /v1/spaces/{id}/bundles.
type pullResponse struct {
	Envelopes []wireEnvelope `cbor:"1,keyasint"`
	Head      uint64         `cbor:"2,keyasint"`
	Low       uint64         `cbor:"3,keyasint"`
}

// epochsResponse answers GET /v1/spaces/{id}/epochs: the signed
// key-epoch records, oldest first.
type epochsResponse struct {
	Records [][]byte `cbor:"1,keyasint"`
}

func decodeEpochs(b []byte) ([][]byte, error) {
	var r epochsResponse
	if err := wireDec.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: key-epoch records: %w", ErrProtocol, err)
	}
	if len(r.Records) > MaxEpochs {
		return nil, fmt.Errorf("%w: %d key-epoch records", ErrProtocol, len(r.Records))
	}
	return r.Records, nil
}

// pushResponse answers POST /v1/spaces/{id}/bundles.
type pushResponse struct {
	Seq       uint64 `cbor:"1,keyasint"`
	Duplicate bool   `cbor:"2,keyasint"`
}

// Envelope is a bundle as the relay returns it: the relay's sequence
// number, the sender it claims, and the sealed bytes. Nothing in it is
// trusted until a Verifier (or Open) has checked Data.
type Envelope struct {
	Seq    uint64
	Sender ed25519.PublicKey
	Data   []byte
}

// Page is one pull response: envelopes in the relay's order, the last
// sequence number it assigned (Head) and the one up to which it has
// compacted (Low). Only the bundles' own contents are authenticated.
type Page struct {
	Envelopes []Envelope
	Head, Low uint64
}

// decodePull decodes and structurally validates a pull response (from an
// untrusted relay).
func decodePull(b []byte) (Page, error) {
	var r pullResponse
	if err := wireDec.Unmarshal(b, &r); err != nil {
		return Page{}, fmt.Errorf("%w: pull response: %w", ErrProtocol, err)
	}
	p := Page{Envelopes: make([]Envelope, 0, len(r.Envelopes)), Head: r.Head, Low: r.Low}
	for _, e := range r.Envelopes {
		if len(e.Sender) != ed25519.PublicKeySize || e.Seq == 0 || len(e.Data) > MaxBundleSize {
			return Page{}, fmt.Errorf("%w: pull response: malformed envelope", ErrProtocol)
		}
		p.Envelopes = append(p.Envelopes, Envelope{Seq: e.Seq, Sender: ed25519.PublicKey(e.Sender), Data: e.Data})
	}
	return p, nil
}

func decodePush(b []byte) (pushResponse, error) {
	var r pushResponse
	if err := wireDec.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: push response: %w", ErrProtocol, err)
	}
	if r.Seq == 0 && !r.Duplicate {
		return r, fmt.Errorf("%w: push response: seq 0", ErrProtocol)
	}
	return r, nil
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Code     string `json:"code"`
	Error    string `json:"error"`
	Now      int64  `json:"now,omitempty"`      // server time, unix ms (stale timestamps)
	Expected uint64 `json:"expected,omitempty"` // next counter (counter conflicts)
}

// Error codes in errorBody.Code.
const (
	codeAuth      = "auth"
	codeStale     = "stale"
	codeReplay    = "replay"
	codeNotMember = "not_member"
	codeRemoved   = "removed"
	codeConflict  = "conflict"
	codeCounter   = "counter"
	codeQuota     = "quota"
	codeTooLarge  = "too_large"
	codeBadReq    = "bad_request"
	codeBusy      = "busy"
	codeInternal  = "internal"
	codeClosed    = "closed"
)

func decodeError(b []byte) (errorBody, error) {
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%w: error response: %w", ErrProtocol, err)
	}
	if len(e.Error) > 1024 {
		e.Error = e.Error[:1024]
	}
	return e, nil
}

// SpaceStatus is what the relay reports about a space (GET status): the
// metadata it holds anyway.
type SpaceStatus struct {
	Space   string            `json:"space"`
	Version uint64            `json:"version"`
	Members int               `json:"members"`
	Head    uint64            `json:"head"`    // last sequence number assigned
	Low     uint64            `json:"low"`     // every seq <= Low is compacted
	Bundles int64             `json:"bundles"` // bundles held
	Bytes   int64             `json:"bytes"`   // bytes held
	Cursors map[string]uint64 `json:"cursors"` // member fingerprint -> acknowledged seq
	// Epoch is the newest key epoch the relay holds a record of.
	Epoch uint64 `json:"epoch,omitempty"`
	// Now is the relay's clock when it answered (Unix ms).
	Now int64 `json:"now,omitempty"`
	// Peers is every key that is or was a member, with what the relay
	// keeps about it.
	Peers []PeerStatus `json:"peers,omitempty"`
}

// PeerStatus is what the relay keeps about one key of a space.
type PeerStatus struct {
	Key    []byte `json:"key"` // Ed25519 public key
	Member bool   `json:"member"`
	Cursor uint64 `json:"cursor"` // acknowledged seq
	// LastAck is when the key last acknowledged (Unix ms, relay clock);
	// for a member that never did, when it was added.
	LastAck   int64  `json:"last_ack"`
	Counter   uint64 `json:"counter"`   // highest counter stored from it
	Compacted uint64 `json:"compacted"` // highest counter of its compacted
	Bundles   int64  `json:"bundles"`   // bundles of it held
}

func decodeStatus(b []byte) (SpaceStatus, error) {
	var s SpaceStatus
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w: status response: %w", ErrProtocol, err)
	}
	if len(s.Cursors) > MaxMembers || len(s.Peers) > maxPeers {
		return s, fmt.Errorf("%w: status response: %d cursors, %d peers", ErrProtocol, len(s.Cursors), len(s.Peers))
	}
	for _, p := range s.Peers {
		if len(p.Key) != ed25519.PublicKeySize {
			return s, fmt.Errorf("%w: status response: key of %d bytes", ErrProtocol, len(p.Key))
		}
	}
	return s, nil
}
