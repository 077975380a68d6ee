package replica

import (
	"bytes"
	"compress/flate"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/internal/cborx"
	"github.com/ferrysync/ferry/internal/names"
	"github.com/fxamacker/cbor/v2"
)

// ProtocolVersion is the sync protocol version this build speaks. A peer
// that speaks another version is refused in the handshake. Version 3
// (hellos with raw fingerprints, reconciliation splitting buckets by key
// tag) cannot be read by version 2 builds; version 4 sends small whole
// records as stored, with document chunks, which version 3 builds refuse
// (docs/sync.md, "Sending whole records").
const ProtocolVersion = 4

// Wire limits. Every count and length in a decoded message is checked
// against these before anything proportional to it is allocated; byte
// strings are further bounded by the transport's maximum frame size.
const (
	maxRecordsPerBatch = 4096
	maxHeads           = 256
	maxNameLen         = 1024
	maxMessageText     = 4096
)

// ErrProtocol reports a peer message that is malformed, out of bounds, or
// out of order. The session that received it ends; nothing is applied.
var ErrProtocol = errkind.New("replica: protocol violation", errkind.Protocol)

// msgType tags each wire message.
type msgType uint8

// Message tags; 5 was a separate resend request, now carried in the Ack.
const (
	msgHello msgType = 1
	msgBatch msgType = 2
	msgAck   msgType = 3
	msgIdle  msgType = 4
	msgError msgType = 6
	msgRecon msgType = 7
)

// wireMsg is the one frame type on a sync connection: a version, a tag and
// exactly one body. Integer keys keep frames small; the encoding is CBOR
// core deterministic, so equal messages are equal bytes.
type wireMsg struct {
	V     uint8     `cbor:"1,keyasint"`
	T     msgType   `cbor:"2,keyasint"`
	Hello *helloMsg `cbor:"3,keyasint,omitempty"`
	Batch *batchMsg `cbor:"4,keyasint,omitempty"`
	Ack   *ackMsg   `cbor:"5,keyasint,omitempty"`
	Idle  *idleMsg  `cbor:"6,keyasint,omitempty"`
	Err   *errMsg   `cbor:"8,keyasint,omitempty"`
	Recon *reconMsg `cbor:"9,keyasint,omitempty"`
}

// helloMsg opens a session. Each side sends one. On the wire it is a
// helloWire (see MarshalCBOR): fingerprints travel as their 32 bytes.
type helloMsg struct {
	// Replica is the sender's identity fingerprint; it must match the
	// identity the transport authenticated.
	Replica string `cbor:"1,keyasint"`
	// Name is the sender's human-readable replica name.
	Name string `cbor:"2,keyasint,omitempty"`
	// Policy is the fingerprint of the sender's conflict policy set.
	Policy string `cbor:"3,keyasint"`
	// Cursor is the position in the receiver's change feed up to which the
	// sender has applied everything: "send me your feed after Cursor".
	Cursor uint64 `cbor:"4,keyasint"`
	// Colls are the collections the sender shares with the receiver (it
	// holds a live grant for them), sorted: reconciliation covers the
	// collections both sides share with each other.
	Colls []string `cbor:"5,keyasint,omitempty"`
	// Nonce is reconNonceLen random bytes; both nonces key the session's
	// reconciliation fingerprints.
	Nonce []byte `cbor:"6,keyasint,omitempty"`
	// Recon asks for a reconciliation (first meeting, grants changed, the
	// periodic check is due).
	Recon bool `cbor:"7,keyasint,omitempty"`
	// Gen counts the sessions this pair completed, as the sender's store
	// remembers it: a side whose Gen is behind lost state (its store was
	// restored from an older copy), and the pair reconciles.
	Gen uint64 `cbor:"8,keyasint,omitempty"`
	// Seq is the sender's newest feed position. A receiver whose cursor
	// for the sender is beyond it (the sender's store went back) starts
	// from 0 again.
	Seq uint64 `cbor:"9,keyasint,omitempty"`
}

// helloWire is a hello as it travels. The identity fingerprint (52
// base32 characters) and the policy fingerprint (64 hex digits) take 32
// bytes each as raw bytes (keys 10 and 11); a value that is not in its
// canonical form (test doubles) travels as the string (keys 1 and 3).
// Zero values are left out. This halves the hello: an idle session is two
// hellos and two idles.
type helloWire struct {
	Replica    string   `cbor:"1,keyasint,omitempty"`
	Name       string   `cbor:"2,keyasint,omitempty"`
	Policy     string   `cbor:"3,keyasint,omitempty"`
	Cursor     uint64   `cbor:"4,keyasint,omitempty"`
	Colls      []string `cbor:"5,keyasint,omitempty"`
	Nonce      []byte   `cbor:"6,keyasint,omitempty"`
	Recon      bool     `cbor:"7,keyasint,omitempty"`
	Gen        uint64   `cbor:"8,keyasint,omitempty"`
	Seq        uint64   `cbor:"9,keyasint,omitempty"`
	ReplicaRaw []byte   `cbor:"10,keyasint,omitempty"`
	PolicyRaw  []byte   `cbor:"11,keyasint,omitempty"`
}

// fpWire is transport.Fingerprint's encoding (lowercase RFC 4648 base32
// without padding) of a 32-byte SHA-256.
var fpWire = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// rawFingerprint returns the 32 bytes a canonical identity fingerprint
// encodes, or nil.
func rawFingerprint(s string) []byte {
	b, err := fpWire.DecodeString(s)
	if err != nil || len(b) != 32 || fpWire.EncodeToString(b) != s {
		return nil
	}
	return b
}

// rawHex returns the 32 bytes a lowercase hex string of 64 digits
// encodes, or nil.
func rawHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 || hex.EncodeToString(b) != s {
		return nil
	}
	return b
}

// MarshalCBOR encodes the hello as a helloWire.
func (h *helloMsg) MarshalCBOR() ([]byte, error) {
	w := helloWire{Name: h.Name, Cursor: h.Cursor, Colls: h.Colls, Nonce: h.Nonce, Recon: h.Recon, Gen: h.Gen, Seq: h.Seq}
	if w.ReplicaRaw = rawFingerprint(h.Replica); w.ReplicaRaw == nil {
		w.Replica = h.Replica
	}
	if w.PolicyRaw = rawHex(h.Policy); w.PolicyRaw == nil {
		w.Policy = h.Policy
	}
	return wireEnc.Marshal(&w)
}

// UnmarshalCBOR decodes a helloWire. A fingerprint sent both ways, or raw
// bytes of another length than 32, is an error.
func (h *helloMsg) UnmarshalCBOR(b []byte) error {
	var w helloWire
	if err := wireDec.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.ReplicaRaw != nil && (len(w.ReplicaRaw) != 32 || w.Replica != "") ||
		w.PolicyRaw != nil && (len(w.PolicyRaw) != 32 || w.Policy != "") {
		return errors.New("hello fingerprint sent twice or of the wrong length")
	}
	*h = helloMsg{Replica: w.Replica, Name: w.Name, Policy: w.Policy, Cursor: w.Cursor, Colls: w.Colls,
		Nonce: w.Nonce, Recon: w.Recon, Gen: w.Gen, Seq: w.Seq}
	if w.ReplicaRaw != nil {
		h.Replica = fpWire.EncodeToString(w.ReplicaRaw)
	}
	if w.PolicyRaw != nil {
		h.Policy = hex.EncodeToString(w.PolicyRaw)
	}
	return nil
}

// recordChanges carries one record's Automerge changes.
type recordChanges struct {
	Collection string `cbor:"1,keyasint"`
	ID         string `cbor:"2,keyasint"`
	// Heads are the sender's heads for the record once these changes are
	// applied; empty on a partial entry (more of the record follows).
	Heads [][]byte `cbor:"3,keyasint,omitempty"`
	// Changes is automerge.SaveChanges output: the changes the sender
	// believes the receiver lacks, in causal order.
	Changes []byte `cbor:"4,keyasint,omitempty"`
	// Partial marks an entry whose record continues in the next entry.
	Partial bool `cbor:"5,keyasint,omitempty"`
	// Off is how many bytes of the first change in Changes earlier parts
	// of this record carried: a change larger than a frame travels in
	// pieces, each a part of its own (see splitBatch). 0: Changes begins
	// with a whole change.
	Off uint64 `cbor:"6,keyasint,omitempty"`

	// from names the sender within a relay space (not on the wire): the
	// pieces of a change are kept per sender.
	from string
	// doc is a whole saved document to import (ImportDoc; not on the
	// wire): for a record new to the store it is loaded as the record's
	// own document (one Load, see apply), else read into Changes first.
	doc []byte
}

// batchMsg carries changed records from the sender's feed.
type batchMsg struct {
	Records []recordChanges `cbor:"1,keyasint"`
	// UpTo is the sender's feed position this batch completes: once it is
	// applied, the receiver's cursor for the sender may move to UpTo.
	UpTo uint64 `cbor:"2,keyasint"`
}

// ackMsg acknowledges that batches up to Applied are durably applied,
// except the records in Need, which the acknowledging side could not apply
// (their dependencies are missing) and asks for in full. Asked counts all
// the records it still waits for: the session stays open until they arrive.
type ackMsg struct {
	Applied uint64    `cbor:"1,keyasint"`
	Asked   uint32    `cbor:"2,keyasint,omitempty"`
	Need    []needMsg `cbor:"3,keyasint,omitempty"`
}

// idleMsg says "my feed up to Seq has been sent, I have applied your feed
// up to Applied, and I have received Got of your batches". Two matching
// idles end the session. Got makes an idle sent before a batch arrived
// (positions can repeat when a side rescans its feed) tell itself apart
// from one sent after.
type idleMsg struct {
	Seq     uint64 `cbor:"1,keyasint"`
	Applied uint64 `cbor:"2,keyasint"`
	Got     uint64 `cbor:"3,keyasint,omitempty"`
}

// needMsg names a record the receiver could not apply (its dependencies
// are missing, for example after it was restored from an old backup) and
// asks for in full; it travels in the Ack.
type needMsg struct {
	Collection string `cbor:"1,keyasint"`
	ID         string `cbor:"2,keyasint"`
}

// errMsg ends a session with a reason the other side can show.
type errMsg struct {
	Code uint16 `cbor:"1,keyasint"`
	Text string `cbor:"2,keyasint"`
}

// Error codes carried by errMsg.
const (
	errCodeVersion  = 1
	errCodePolicy   = 2
	errCodeIdentity = 3
	errCodeProtocol = 4
	errCodeInternal = 5
	errCodeConsent  = 6
)

var (
	wireEnc = cborx.Enc
	wireDec = cborx.NewDec(cbor.DecOptions{
		MaxNestedLevels:   8,
		MaxArrayElements:  maxRecordsPerBatch,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	})
)

// Frame encodings: the first byte of every frame says how the CBOR
// message after it is stored.
const (
	frameRaw     = 0 // CBOR as is
	frameDeflate = 1 // CBOR compressed with DEFLATE (RFC 1951)
)

// compressAbove is the message size from which frames are compressed:
// batches of Automerge changes repeat actor ids, field names and
// metadata keys, and shrink several times.
const compressAbove = 512

// maxInflated bounds a decompressed frame, so a small hostile frame cannot
// expand without limit.
const maxInflated = 16 << 20

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// encodeMsg encodes one wire message as a frame.
func encodeMsg(m *wireMsg) ([]byte, error) {
	m.V = ProtocolVersion
	b, err := wireEnc.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("replica: encode %d: %w", m.T, err)
	}
	if len(b) < compressAbove {
		return append([]byte{frameRaw}, b...), nil
	}
	var buf bytes.Buffer
	buf.Grow(len(b)/3 + 16)
	buf.WriteByte(frameDeflate)
	w := deflaters.Get().(*flate.Writer)
	defer deflaters.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("replica: compress: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("replica: compress: %w", err)
	}
	if buf.Len() >= len(b)+1 {
		return append([]byte{frameRaw}, b...), nil
	}
	return buf.Bytes(), nil
}

// decodeMsg decodes and validates one frame from a peer. Any failure
// wraps ErrProtocol.
func decodeMsg(frame []byte) (*wireMsg, error) { return decodeFrame(frame, false) }

// minBatchVersion is the oldest protocol version whose batches this build
// reads: a batch's records have kept their encoding since version 2
// (versions 3 and 4 changed the hello, the reconciliation and what change
// bytes may hold, all of which a newer receiver reads).
const minBatchVersion = 2

// decodeBatch decodes a stored or relayed batch: a record parked in the
// store, or a relay bundle, which an older build may have written. A batch
// of versions minBatchVersion to ProtocolVersion is read; anything else
// as decodeMsg.
func decodeBatch(frame []byte) (*wireMsg, error) { return decodeFrame(frame, true) }

func decodeFrame(frame []byte, olderBatch bool) (*wireMsg, error) {
	if len(frame) == 0 {
		return nil, protoErr("empty frame")
	}
	b := frame[1:]
	switch frame[0] {
	case frameRaw:
	case frameDeflate:
		r := flate.NewReader(bytes.NewReader(b))
		out, err := io.ReadAll(io.LimitReader(r, maxInflated+1))
		if err != nil {
			return nil, fmt.Errorf("%w: inflate: %w", ErrProtocol, err)
		}
		if len(out) > maxInflated {
			return nil, protoErr("frame inflates beyond %d bytes", maxInflated)
		}
		b = out
	default:
		return nil, protoErr("unknown frame encoding %d", frame[0])
	}
	var m wireMsg
	if err := wireDec.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	v := m.V
	if olderBatch && m.T == msgBatch && m.V >= minBatchVersion && m.V < ProtocolVersion {
		m.V = ProtocolVersion // checked as this version's batch from here on
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	m.V = v
	return &m, nil
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// validate checks the version, that exactly the body named by the tag is
// present, and every bound.
func (m *wireMsg) validate() error {
	if m.V != ProtocolVersion {
		return fmt.Errorf("%w: %w: version %d, want %d", ErrProtocol, ErrVersionMismatch, m.V, ProtocolVersion)
	}
	bodies := 0
	for _, present := range []bool{m.Hello != nil, m.Batch != nil, m.Ack != nil, m.Idle != nil, m.Err != nil, m.Recon != nil} {
		if present {
			bodies++
		}
	}
	if bodies != 1 {
		return protoErr("message has %d bodies", bodies)
	}
	switch m.T {
	case msgHello:
		if m.Hello == nil {
			return protoErr("hello without body")
		}
		if len(m.Hello.Replica) == 0 || len(m.Hello.Replica) > maxNameLen || len(m.Hello.Name) > maxNameLen || len(m.Hello.Policy) > maxNameLen {
			return protoErr("hello fields out of bounds")
		}
		if len(m.Hello.Nonce) != 0 && len(m.Hello.Nonce) != reconNonceLen {
			return protoErr("hello nonce of %d bytes", len(m.Hello.Nonce))
		}
		for i, c := range m.Hello.Colls {
			if !names.Fits(c) || i > 0 && c <= m.Hello.Colls[i-1] {
				return protoErr("hello collections out of bounds or order")
			}
		}
	case msgBatch:
		if m.Batch == nil {
			return protoErr("batch without body")
		}
		for i := range m.Batch.Records {
			if err := m.Batch.Records[i].validate(); err != nil {
				return err
			}
		}
	case msgAck:
		if m.Ack == nil {
			return protoErr("ack without body")
		}
		for _, n := range m.Ack.Need {
			if err := validName(n.Collection, n.ID); err != nil {
				return err
			}
		}
	case msgIdle:
		if m.Idle == nil {
			return protoErr("idle without body")
		}
	case msgError:
		if m.Err == nil || len(m.Err.Text) > maxMessageText {
			return protoErr("bad error body")
		}
	case msgRecon:
		if m.Recon == nil {
			return protoErr("recon without body")
		}
		return m.Recon.validate()
	default:
		return protoErr("unknown message type %d", m.T)
	}
	return nil
}

func (rc *recordChanges) validate() error {
	if err := validName(rc.Collection, rc.ID); err != nil {
		return err
	}
	if len(rc.Heads) > maxHeads {
		return protoErr("%d heads", len(rc.Heads))
	}
	for _, h := range rc.Heads {
		if len(h) != 32 {
			return protoErr("head of %d bytes", len(h))
		}
	}
	if !rc.Partial && len(rc.Heads) == 0 && len(rc.Changes) > 0 {
		return protoErr("complete entry without heads")
	}
	if rc.Off > uint64(maxChangeBytes) || rc.Off > 0 && len(rc.Changes) == 0 {
		return protoErr("piece at offset %d of %d bytes", rc.Off, len(rc.Changes))
	}
	return nil
}

// validName bounds a record's names: longer than any name can be, or
// empty, is a protocol violation. A name within bounds that breaks the
// naming rule (a control character, broken UTF-8) is not: the session
// refuses that record alone and counts it (SyncStats.InvalidNames), so an
// older peer holding such a record still syncs everything else.
func validName(collection, id string) error {
	if !names.Fits(collection) || !names.Fits(id) {
		return protoErr("record name out of bounds")
	}
	return nil
}
