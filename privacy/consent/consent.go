package consent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/internal/cborx"
	"github.com/ferrysync/ferry/internal/kv"
	"github.com/ferrysync/ferry/internal/names"
	"github.com/fxamacker/cbor/v2"
)

// Purposes an application may declare. Grants name one of the purposes
// the ledger was opened with.
const (
	PurposeDeviceSync = "device-sync"
	PurposeBackup     = "backup"
	PurposeImprove    = "improve-model-quality"
)

// Errors callers can test with errors.Is.
var (
	// ErrTampered: the ledger's chain is broken (an entry altered, removed
	// or reordered, or the tail cut off).
	ErrTampered = errkind.New("consent: ledger tampered", errkind.Corrupt)
	// ErrUnknownPurpose: the purpose is not in the declared vocabulary.
	ErrUnknownPurpose = errkind.New("consent: unknown purpose", errkind.Invalid)
	// ErrNoGrant: no live grant covers the share.
	ErrNoGrant = errkind.New("consent: no live grant", errkind.NotFound)
	// ErrInvalid: a malformed grant or request.
	ErrInvalid = errkind.New("consent: invalid", errkind.Invalid)
	// ErrDeclined: the user said no.
	ErrDeclined = errkind.New("consent: declined", errkind.Forbidden)
)

// Grant is the user's permission to share one collection (all of it, or
// only Fields) with one destination for one purpose until Expires.
type Grant struct {
	ID          string    `cbor:"1,keyasint" json:"id"`
	Collection  string    `cbor:"2,keyasint" json:"collection"`
	Fields      []string  `cbor:"3,keyasint,omitempty" json:"fields,omitempty"`
	Purpose     string    `cbor:"4,keyasint" json:"purpose"`
	Destination string    `cbor:"5,keyasint" json:"destination"`
	Given       time.Time `cbor:"6,keyasint" json:"given"`
	// Expires is when the grant ends; the zero time means "until revoked".
	Expires time.Time `cbor:"7,keyasint,omitempty" json:"expires,omitzero"`
}

// live reports whether g covers use at now (revocation is checked apart).
func (g *Grant) live(now time.Time) bool {
	return !now.Before(g.Given) && (g.Expires.IsZero() || now.Before(g.Expires))
}

// Revocation ends a grant.
type Revocation struct {
	GrantID string `cbor:"1,keyasint" json:"grant_id"`
	Reason  string `cbor:"2,keyasint,omitempty" json:"reason,omitempty"`
}

// Share records data that left the device under a grant.
type Share struct {
	GrantID     string `cbor:"1,keyasint" json:"grant_id"`
	Collection  string `cbor:"2,keyasint" json:"collection"`
	Purpose     string `cbor:"3,keyasint" json:"purpose"`
	Destination string `cbor:"4,keyasint" json:"destination"`
	Records     int    `cbor:"5,keyasint" json:"records"`
	Bytes       int64  `cbor:"6,keyasint" json:"bytes"`
}

// Answer records the user's answer to a permission request.
type Answer struct {
	Request Request `cbor:"1,keyasint" json:"request"`
	Granted bool    `cbor:"2,keyasint" json:"granted"`
	GrantID string  `cbor:"3,keyasint,omitempty" json:"grant_id,omitempty"`
}

// Membership records a change of who belongs to a relay space this
// device shares with: a space is a destination whose members are the
// devices (of this user or another) that can read what is shared with it.
type Membership struct {
	// Space is the destination, "space:<id>".
	Space string `cbor:"1,keyasint" json:"space"`
	// Member is the device's identity fingerprint.
	Member string `cbor:"2,keyasint" json:"member"`
	// Change is one of the Member* constants.
	Change string `cbor:"3,keyasint" json:"change"`
	// Epoch is the space's key epoch after the change (a removal rotates
	// the key).
	Epoch uint64 `cbor:"4,keyasint,omitempty" json:"epoch,omitempty"`
	// Reason says why, in words (the policy that dropped a member, say).
	Reason string `cbor:"5,keyasint,omitempty" json:"reason,omitempty"`
}

// Membership changes.
const (
	MemberCreated = "created" // this device created the space
	MemberJoined  = "joined"  // this device joined by invitation
	MemberAdded   = "added"   // this device invited Member
	MemberRemoved = "removed" // this device removed Member (key rotated)
	MemberExpired = "expired" // the space's policy dropped Member (key rotated)
	MemberLeft    = "left"    // this device learnt it was removed by another member
)

// Kind names a ledger entry's kind.
type Kind string

// Entry kinds.
const (
	KindGrant  Kind = "grant"
	KindRevoke Kind = "revoke"
	KindShare  Kind = "share"
	KindAnswer Kind = "answer"
	KindMember Kind = "member"
)

// Entry is one ledger entry. Hash chains it to the entry before.
type Entry struct {
	Seq    uint64      `cbor:"1,keyasint" json:"seq"`
	Kind   Kind        `cbor:"2,keyasint" json:"kind"`
	At     time.Time   `cbor:"3,keyasint" json:"at"`
	Grant  *Grant      `cbor:"4,keyasint,omitempty" json:"grant,omitempty"`
	Revoke *Revocation `cbor:"5,keyasint,omitempty" json:"revoke,omitempty"`
	Share  *Share      `cbor:"6,keyasint,omitempty" json:"share,omitempty"`
	Answer *Answer     `cbor:"7,keyasint,omitempty" json:"answer,omitempty"`
	Prev   []byte      `cbor:"8,keyasint" json:"prev"`
	Hash   []byte      `cbor:"9,keyasint" json:"hash"`
	Member *Membership `cbor:"10,keyasint,omitempty" json:"member,omitempty"`
}

// Log is the append-only store under the ledger (kv.Log: the storage
// package's sealed log, or kv.MemLog in tests).
type Log = kv.Log

// Anchor keeps the ledger's last sequence number and hash, so a cut-off
// tail is detected (the storage package's *Slots has these methods).
type Anchor interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, value []byte) error
}

// Options configure a ledger.
type Options struct {
	// Purposes is the vocabulary grants may use (the three Purpose
	// constants when empty).
	Purposes []string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Ledger is the consent state and its append-only record. Reads (Allowed,
// Live) never wait for I/O; appends are serialised by their own lock so
// the chain stays in order.
type Ledger struct {
	log      Log
	anchor   Anchor
	now      func() time.Time
	purposes []string

	appendMu sync.Mutex // serialises appends (held across the log write)

	mu      sync.RWMutex // guards the state below; never held across I/O
	grants  map[string]Grant
	revoked map[string]bool
	lastSeq uint64
	last    []byte
	count   int
}

var (
	encMode = cborx.Enc
	decMode = cborx.NewDec(cbor.DecOptions{MaxNestedLevels: 8, MaxArrayElements: 1024, MaxMapPairs: 32})
)

// Open reads the whole ledger, checks its chain and anchor, and rebuilds
// the consent state.
func Open(ctx context.Context, log Log, anchor Anchor, opts Options) (*Ledger, error) {
	l := &Ledger{log: log, anchor: anchor, now: opts.Now, purposes: opts.Purposes,
		grants: map[string]Grant{}, revoked: map[string]bool{}, last: make([]byte, 32)}
	if l.now == nil {
		l.now = time.Now
	}
	if len(l.purposes) == 0 {
		l.purposes = []string{PurposeDeviceSync, PurposeBackup, PurposeImprove}
	}
	err := log.Scan(ctx, 0, func(seq uint64, b []byte) error {
		e, err := l.check(seq, b)
		if err != nil {
			return err
		}
		l.applyEntry(e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	ab, ok, err := anchor.Get(ctx, "ledger")
	if err != nil {
		return nil, fmt.Errorf("consent: anchor: %w", err)
	}
	if ok {
		if len(ab) != 40 {
			return nil, fmt.Errorf("%w: bad anchor", ErrTampered)
		}
		aseq := binary.BigEndian.Uint64(ab)
		// The anchor is written after the entry: a crash between the two
		// leaves the log one entry ahead, never behind.
		switch {
		case aseq == l.lastSeq && string(ab[8:]) == string(l.last):
		case aseq+1 == l.lastSeq:
		default:
			return nil, fmt.Errorf("%w: ledger ends at %d, anchor says %d", ErrTampered, l.lastSeq, aseq)
		}
	} else if l.lastSeq > 1 {
		return nil, fmt.Errorf("%w: anchor missing", ErrTampered)
	}
	return l, nil
}

// check decodes entry seq and verifies it continues the chain.
func (l *Ledger) check(seq uint64, b []byte) (*Entry, error) {
	var e Entry
	if err := decMode.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: entry %d: %w", ErrTampered, seq, err)
	}
	if e.Seq != seq || seq != l.lastSeq+1 {
		return nil, fmt.Errorf("%w: entry %d out of sequence (after %d)", ErrTampered, seq, l.lastSeq)
	}
	if string(e.Prev) != string(l.last) {
		return nil, fmt.Errorf("%w: entry %d does not follow its predecessor", ErrTampered, seq)
	}
	want := e.Hash
	if h, err := entryHash(&e); err != nil || string(h) != string(want) {
		return nil, fmt.Errorf("%w: entry %d hash mismatch", ErrTampered, seq)
	}
	l.lastSeq, l.last = seq, want
	return &e, nil
}

func entryHash(e *Entry) ([]byte, error) {
	c := *e
	c.Hash = nil
	b, err := encMode.Marshal(&c)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

func (l *Ledger) applyEntry(e *Entry) {
	l.count++
	switch e.Kind {
	case KindGrant:
		if e.Grant != nil {
			l.grants[e.Grant.ID] = *e.Grant
		}
	case KindRevoke:
		if e.Revoke != nil {
			l.revoked[e.Revoke.GrantID] = true
		}
	}
}

// append chains, writes and anchors one entry, then applies it.
func (l *Ledger) append(ctx context.Context, e Entry) (Entry, error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.mu.RLock()
	e.Seq, e.Prev = l.lastSeq+1, l.last
	l.mu.RUnlock()
	e.At = l.now().UTC()
	h, err := entryHash(&e)
	if err != nil {
		return Entry{}, fmt.Errorf("consent: encode: %w", err)
	}
	e.Hash = h
	b, err := encMode.Marshal(&e)
	if err != nil {
		return Entry{}, fmt.Errorf("consent: encode: %w", err)
	}
	seq, err := l.log.Append(ctx, b)
	if err != nil {
		return Entry{}, fmt.Errorf("consent: append: %w", err)
	}
	if seq != e.Seq {
		return Entry{}, fmt.Errorf("%w: log assigned %d, ledger expected %d", ErrTampered, seq, e.Seq)
	}
	// The entry is in the log: it holds, whatever happens to the anchor
	// (which may lag the log by one entry).
	l.mu.Lock()
	l.lastSeq, l.last = e.Seq, h
	l.applyEntry(&e)
	l.mu.Unlock()
	anchor := binary.BigEndian.AppendUint64(nil, e.Seq)
	if err := l.anchor.Put(ctx, "ledger", append(anchor, h...)); err != nil {
		return e, fmt.Errorf("consent: anchor: %w", err)
	}
	return e, nil
}

func newID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}

func (l *Ledger) knownPurpose(p string) bool { return slices.Contains(l.purposes, p) }

// Grant records a new grant and returns it with its id and time set. A
// collection name outside the naming rule (docs/replica.md: valid UTF-8,
// 1 to 1024 bytes, no control character) is ErrInvalid.
func (l *Ledger) Grant(ctx context.Context, g Grant) (Grant, error) {
	if g.Collection == "" || g.Destination == "" {
		return Grant{}, fmt.Errorf("%w: a grant names a collection and a destination", ErrInvalid)
	}
	if err := names.Check("collection", g.Collection); err != nil {
		return Grant{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !l.knownPurpose(g.Purpose) {
		return Grant{}, fmt.Errorf("%w: %q (declared: %s)", ErrUnknownPurpose, g.Purpose, strings.Join(l.purposes, ", "))
	}
	if g.Purpose == PurposeDeviceSync && len(g.Fields) > 0 {
		return Grant{}, fmt.Errorf("%w: device-sync shares whole records; field subsets apply to anonymized shares", ErrInvalid)
	}
	g.ID = newID()
	g.Given = l.now().UTC()
	g.Fields = slices.Clone(g.Fields)
	sort.Strings(g.Fields)
	if !g.Expires.IsZero() && !g.Expires.After(g.Given) {
		return Grant{}, fmt.Errorf("%w: expiry %v is not after now", ErrInvalid, g.Expires)
	}
	if _, err := l.append(ctx, Entry{Kind: KindGrant, Grant: &g}); err != nil {
		return Grant{}, err
	}
	return g, nil
}

// Revoke ends a grant at once. Revoking an unknown or already revoked
// grant is an error.
func (l *Ledger) Revoke(ctx context.Context, grantID, reason string) error {
	l.mu.RLock()
	_, known := l.grants[grantID]
	gone := l.revoked[grantID]
	l.mu.RUnlock()
	if !known || gone {
		return fmt.Errorf("%w: no live grant %q", ErrNoGrant, grantID)
	}
	_, err := l.append(ctx, Entry{Kind: KindRevoke, Revoke: &Revocation{GrantID: grantID, Reason: reason}})
	return err
}

// RevokeDestination revokes every unrevoked grant to dest and returns how
// many it revoked.
func (l *Ledger) RevokeDestination(ctx context.Context, dest, reason string) (int, error) {
	l.mu.RLock()
	var ids []string
	for id, g := range l.grants {
		if g.Destination == dest && !l.revoked[id] {
			ids = append(ids, id)
		}
	}
	l.mu.RUnlock()
	sort.Strings(ids)
	for _, id := range ids {
		if err := l.Revoke(ctx, id, reason); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// Allowed returns a live grant that lets collection go to dest for
// purpose, if there is one.
func (l *Ledger) Allowed(dest, collection, purpose string) (Grant, bool) {
	now := l.now()
	l.mu.RLock()
	defer l.mu.RUnlock()
	var best Grant
	found := false
	for id, g := range l.grants {
		if l.revoked[id] || g.Destination != dest || g.Collection != collection || g.Purpose != purpose || !g.live(now) {
			continue
		}
		if !found || g.ID < best.ID {
			best, found = g, true
		}
	}
	return best, found
}

// AnyAllowed reports whether dest holds at least one live grant for
// purpose.
func (l *Ledger) AnyAllowed(dest, purpose string) bool {
	now := l.now()
	l.mu.RLock()
	defer l.mu.RUnlock()
	for id, g := range l.grants {
		if !l.revoked[id] && g.Destination == dest && g.Purpose == purpose && g.live(now) {
			return true
		}
	}
	return false
}

// Live lists the grants in force now, by destination then collection.
func (l *Ledger) Live() []Grant {
	now := l.now()
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []Grant
	for id, g := range l.grants {
		if !l.revoked[id] && g.live(now) {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Destination != out[j].Destination {
			return out[i].Destination < out[j].Destination
		}
		if out[i].Collection != out[j].Collection {
			return out[i].Collection < out[j].Collection
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// RecordShare records that data left under a grant.
func (l *Ledger) RecordShare(ctx context.Context, s Share) error {
	_, err := l.append(ctx, Entry{Kind: KindShare, Share: &s})
	return err
}

// RecordMembership records a change of a space's members. A change
// outside the Member* constants, or an empty space or member, is
// ErrInvalid.
func (l *Ledger) RecordMembership(ctx context.Context, m Membership) error {
	switch m.Change {
	case MemberCreated, MemberJoined, MemberAdded, MemberRemoved, MemberExpired, MemberLeft:
	default:
		return fmt.Errorf("%w: membership change %q", ErrInvalid, m.Change)
	}
	if m.Space == "" || m.Member == "" {
		return fmt.Errorf("%w: a membership change names a space and a member", ErrInvalid)
	}
	_, err := l.append(ctx, Entry{Kind: KindMember, Member: &m})
	return err
}

// Memberships returns the membership changes of space ("space:<id>"),
// oldest first, from the verified ledger.
func (l *Ledger) Memberships(ctx context.Context, space string) ([]Membership, error) {
	es, err := l.Entries(ctx)
	if err != nil {
		return nil, err
	}
	var out []Membership
	for _, e := range es {
		if e.Member != nil && e.Member.Space == space {
			out = append(out, *e.Member)
		}
	}
	return out, nil
}

// Entries reads and verifies the whole ledger, oldest first.
func (l *Ledger) Entries(ctx context.Context) ([]Entry, error) {
	v := &Ledger{grants: map[string]Grant{}, revoked: map[string]bool{}, last: make([]byte, 32)}
	var out []Entry
	err := l.log.Scan(ctx, 0, func(seq uint64, b []byte) error {
		e, err := v.check(seq, b)
		if err != nil {
			return err
		}
		out = append(out, *e)
		return nil
	})
	return out, err
}

// Request describes a permission the application asks the user for.
type Request struct {
	Collection  string   `cbor:"1,keyasint" json:"collection"`
	Fields      []string `cbor:"2,keyasint,omitempty" json:"fields,omitempty"`
	Purpose     string   `cbor:"3,keyasint" json:"purpose"`
	Destination string   `cbor:"4,keyasint" json:"destination"`
	// DestinationName is how the destination is shown to the user.
	DestinationName string `cbor:"5,keyasint,omitempty" json:"destination_name,omitempty"`
	// For is how long the grant would last (until revoked when zero).
	For time.Duration `cbor:"6,keyasint,omitempty" json:"for,omitempty"`
}

// Prompt is what the application shows the user: exactly what would be
// shared, for what, with whom, and for how long.
func (r Request) Prompt(now time.Time) string {
	fields := "all fields"
	if len(r.Fields) > 0 {
		fields = "only the fields " + strings.Join(r.Fields, ", ")
	}
	who := r.Destination
	if r.DestinationName != "" {
		who = fmt.Sprintf("%s (%s)", r.DestinationName, r.Destination)
	}
	until := "until you revoke it"
	if r.For > 0 {
		until = "until " + now.Add(r.For).UTC().Format("2006-01-02 15:04 MST")
	}
	return fmt.Sprintf("Share %q (%s) with %s for the purpose %q, %s?", r.Collection, fields, who, r.Purpose, until)
}

// Ask puts the request to the user through ask, records the answer, and
// returns the grant when the user said yes (ErrDeclined otherwise).
func (l *Ledger) Ask(ctx context.Context, r Request, ask func(prompt string, r Request) (bool, error)) (Grant, error) {
	if !l.knownPurpose(r.Purpose) {
		return Grant{}, fmt.Errorf("%w: %q", ErrUnknownPurpose, r.Purpose)
	}
	yes, err := ask(r.Prompt(l.now()), r)
	if err != nil {
		return Grant{}, fmt.Errorf("consent: ask: %w", err)
	}
	ans := Answer{Request: r, Granted: yes}
	var g Grant
	if yes {
		g0 := Grant{Collection: r.Collection, Fields: r.Fields, Purpose: r.Purpose, Destination: r.Destination}
		if r.For > 0 {
			g0.Expires = l.now().Add(r.For)
		}
		if g, err = l.Grant(ctx, g0); err != nil {
			return Grant{}, err
		}
		ans.GrantID = g.ID
	}
	if _, err := l.append(ctx, Entry{Kind: KindAnswer, Answer: &ans}); err != nil {
		return Grant{}, err
	}
	if !yes {
		return Grant{}, ErrDeclined
	}
	return g, nil
}
