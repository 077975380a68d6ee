package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/ferrysync/ferry/internal/kv"
	"maps"
	"slices"
	"strings"
	"time"
)

// KV is the small persistent key/value store the Verifier and Sender keep
// their state in. storage's *Slots implements it; MemKV is in memory.
type KV = kv.KV

// MemKV is an in-memory KV, safe for concurrent use.
type MemKV = kv.Mem

// NewMemKV returns an empty MemKV.
func NewMemKV() *MemKV { return kv.NewMem() }

// Position is how far a sender's bundles have been applied.
type Position struct {
	Sender  ed25519.PublicKey
	Counter uint64
}

// Message is a verified payload, yielded in counter order per sender.
type Message struct {
	Seq     uint64 // the relay's sequence number (untrusted, for information)
	Sender  ed25519.PublicKey
	Counter uint64
	Payload []byte
}

// VerifierOptions configures a Verifier. Zero values take the defaults.
type VerifierOptions struct {
	// MaxBuffered and MaxBufferedBytes bound the bundles held while
	// waiting for a missing counter. Defaults 1024 bundles and 64 MiB.
	MaxBuffered      int
	MaxBufferedBytes int
	// Start sets each sender's initial applied counter when the KV holds
	// no state for the space (Invitation.Start).
	Start []Position
	// Self is this device's key: its own bundles, which the relay returns
	// like any other, are verified and skipped, not yielded.
	Self ed25519.PublicKey
	// Removed lists keys removed from the space (EpochRecord.Removed),
	// each with the last counter accepted from it: a later bundle of it
	// is a forgery by a device that still holds an older key, and is
	// skipped, never yielded (Refused counts them).
	Removed []Position
}

// Verifier is the receiving side of a space: it opens bundles, refuses
// forged or altered ones (ErrTampered), ignores replays, buffers bundles
// that arrive ahead of a missing counter and yields each sender's payloads
// in counter order, exactly once once the caller has confirmed them with
// Applied, across restarts: what was yielded but not confirmed before a
// crash is yielded again.
//
// It also keeps the space's cursor: the relay sequence number up to which
// everything is done, never past a bundle still buffered, yielded and
// unconfirmed, or tampered, nor past a sequence number it has not seen (the
// relay numbers a space's bundles densely, so a hole is a dropped bundle
// even at a sender's tail). That is what it acknowledges to the relay, so
// the relay never compacts what this device still needs.
//
// State lives in the KV under "relay/recv/<space ID>": the cursor and each
// sender's applied counter, written at each Applied.
//
// A Verifier is not safe for concurrent use.
type Verifier struct {
	space Space
	kv    KV
	key   string
	opts  VerifierOptions

	senders  map[string]*senderState
	cursor   uint64 // persisted cursor (as loaded or last saved)
	saved    []byte // last state written
	maxSeen  uint64 // highest seq seen this session: where the next pull starts
	contig   uint64 // every seq in (cursor, contig] was seen
	ahead    map[uint64]struct{}
	started  bool
	blocked  uint64 // lowest seq of a tampered or overflowing envelope this session
	overflow bool
	bufN     int
	bufBytes int
	acked    uint64 // highest cursor acknowledged to the relay this session
	ackSent  bool   // an acknowledgement was sent this session
	refused  int    // bundles of removed senders skipped
}

type senderState struct {
	pub       ed25519.PublicKey
	applied   uint64 // confirmed (persisted)
	delivered uint64 // yielded
	lastSeq   uint64 // seq of the bundle that brought delivered
	pending   []pendingMsg
	buf       map[uint64]bufEntry
}

type pendingMsg struct{ counter, seq uint64 }

type bufEntry struct {
	seq     uint64
	payload []byte
}

const recvStateVersion = 1

// NewVerifier loads the state of space from kv.
func NewVerifier(ctx context.Context, space Space, kv KV, opts VerifierOptions) (*Verifier, error) {
	if err := space.check(); err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, invalidf("nil KV")
	}
	if opts.MaxBuffered < 0 || opts.MaxBufferedBytes < 0 {
		return nil, invalidf("negative verifier option")
	}
	if opts.MaxBuffered == 0 {
		opts.MaxBuffered = 1024
	}
	if opts.MaxBufferedBytes == 0 {
		opts.MaxBufferedBytes = 64 << 20
	}
	v := &Verifier{space: space, kv: kv, key: "relay/recv/" + space.ID, opts: opts, senders: map[string]*senderState{}}
	raw, ok, err := kv.Get(ctx, v.key)
	if err != nil {
		return nil, fmt.Errorf("relay: load verifier state: %w", err)
	}
	if ok {
		cursor, pos, err := decodeRecvState(raw)
		if err != nil {
			return nil, err
		}
		v.cursor, v.saved = cursor, raw
		for _, p := range pos {
			v.sender(p.Sender).applied = p.Counter
		}
	} else {
		for _, p := range opts.Start {
			if len(p.Sender) != ed25519.PublicKeySize {
				return nil, invalidf("start position with a %d-byte sender", len(p.Sender))
			}
			st := v.sender(p.Sender)
			st.applied = max(st.applied, p.Counter)
		}
	}
	v.Reset()
	if !ok && len(opts.Start) > 0 {
		if err := v.save(ctx); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (v *Verifier) sender(pub ed25519.PublicKey) *senderState {
	st, ok := v.senders[string(pub)]
	if !ok {
		st = &senderState{pub: append(ed25519.PublicKey(nil), pub...)}
		v.senders[string(pub)] = st
	}
	return st
}

// Reset forgets everything not confirmed: buffered bundles, payloads
// yielded but not yet Applied. The next pull starts again at the persisted
// cursor, as after a restart. Call it when applying a payload failed.
func (v *Verifier) Reset() {
	for _, st := range v.senders {
		st.delivered, st.lastSeq, st.pending, st.buf = st.applied, v.cursor, nil, nil
	}
	v.maxSeen, v.blocked, v.overflow, v.bufN, v.bufBytes = v.cursor, 0, false, 0, 0
	v.contig, v.ahead, v.started = v.cursor, nil, false
}

// see records that seq was seen.
func (v *Verifier) see(seq uint64) {
	v.maxSeen = max(v.maxSeen, seq)
	switch {
	case seq <= v.contig:
	case seq == v.contig+1:
		v.contig++
		for {
			if _, ok := v.ahead[v.contig+1]; !ok {
				break
			}
			delete(v.ahead, v.contig+1)
			v.contig++
		}
	default:
		if len(v.ahead) >= 4*v.opts.MaxBuffered {
			v.block(seq)
			v.overflow = true
			return
		}
		if v.ahead == nil {
			v.ahead = map[uint64]struct{}{}
		}
		v.ahead[seq] = struct{}{}
	}
}

// Cursor is the relay sequence number the next pull starts after.
func (v *Verifier) Cursor() uint64 { return v.maxSeen }

// Done is the sequence number up to which everything is applied or
// rejected: what may be acknowledged to the relay.
func (v *Verifier) Done() uint64 {
	safe := v.contig
	for _, st := range v.senders {
		for _, p := range st.pending {
			safe = min(safe, p.seq-1)
		}
		for _, b := range st.buf {
			safe = min(safe, b.seq-1)
		}
		if len(st.buf) > 0 {
			safe = min(safe, st.lastSeq) // do not acknowledge past a gap
		}
	}
	if v.blocked > 0 {
		safe = min(safe, v.blocked-1)
	}
	return safe
}

// Positions returns each sender's applied counter (for Invite).
func (v *Verifier) Positions() []Position {
	var out []Position
	for _, st := range v.senders {
		if st.applied > 0 {
			out = append(out, Position{Sender: st.pub, Counter: st.applied})
		}
	}
	slices.SortFunc(out, func(a, b Position) int { return bytes.Compare(a.Sender, b.Sender) })
	return out
}

func (v *Verifier) block(seq uint64) {
	if v.blocked == 0 || seq < v.blocked {
		v.blocked = seq
	}
}

// AddPage is Add for a whole pull response. A device with no cursor yet
// (new, or its state lost) starts where the relay's log starts (Low):
// older bundles were compacted before it joined.
func (v *Verifier) AddPage(ctx context.Context, p Page) ([]Message, error) {
	if !v.started && v.cursor == 0 && p.Low > v.contig {
		v.contig = p.Low
		v.maxSeen = max(v.maxSeen, p.Low)
	}
	v.started = true
	return v.Add(ctx, p.Envelopes...)
}

// Add verifies envelopes from a pull and returns the payloads that are
// now in order. It may return messages and an error together: the error
// (ErrTampered, joined per bad envelope; ErrMissing when the reorder
// buffer overflows) concerns only the envelopes that were not yielded.
// Apply the messages in order and confirm each with Applied.
func (v *Verifier) Add(ctx context.Context, envs ...Envelope) ([]Message, error) {
	var msgs []Message
	var errs []error
	for _, e := range envs {
		if err := ctx.Err(); err != nil {
			return msgs, err
		}
		v.see(e.Seq)
		b, err := Open(v.space, e.Data)
		if err == nil && !b.Sender.Equal(e.Sender) {
			err = fmt.Errorf("%w: envelope names another sender", ErrTampered)
		}
		if err != nil {
			v.block(e.Seq)
			errs = append(errs, fmt.Errorf("%w (seq %d, relay %s)", err, e.Seq, v.space.RelayURL))
			continue
		}
		if v.opts.Self != nil && b.Sender.Equal(v.opts.Self) {
			continue // our own
		}
		if i := slices.IndexFunc(v.opts.Removed, func(p Position) bool { return p.Sender.Equal(b.Sender) }); i >= 0 &&
			b.Counter > v.opts.Removed[i].Counter {
			v.refused++
			continue // sealed by a removed device after its removal
		}
		st := v.sender(b.Sender)
		switch {
		case b.Counter <= st.delivered:
			// replay: already yielded
		case b.Counter == st.delivered+1:
			msgs = v.deliver(st, e.Seq, b, msgs)
			for {
				next, ok := st.buf[st.delivered+1]
				if !ok {
					break
				}
				delete(st.buf, st.delivered+1)
				v.bufN--
				v.bufBytes -= len(next.payload)
				msgs = v.deliver(st, next.seq, Bundle{Sender: st.pub, Counter: st.delivered + 1, Payload: next.payload}, msgs)
			}
		default:
			if _, dup := st.buf[b.Counter]; dup {
				continue
			}
			if v.bufN >= v.opts.MaxBuffered || v.bufBytes+len(b.Payload) > v.opts.MaxBufferedBytes {
				v.block(e.Seq)
				if !v.overflow {
					errs = append(errs, fmt.Errorf("%w: reorder buffer full (%d bundles) waiting for counter %d of %s from relay %s",
						ErrMissing, v.bufN, st.delivered+1, fingerprint(st.pub), v.space.RelayURL))
				}
				v.overflow = true
				continue
			}
			if st.buf == nil {
				st.buf = map[uint64]bufEntry{}
			}
			st.buf[b.Counter] = bufEntry{seq: e.Seq, payload: b.Payload}
			v.bufN++
			v.bufBytes += len(b.Payload)
		}
	}
	return msgs, joinCapped(errs)
}

func (v *Verifier) deliver(st *senderState, seq uint64, b Bundle, msgs []Message) []Message {
	st.delivered = b.Counter
	st.lastSeq = seq
	st.pending = append(st.pending, pendingMsg{counter: b.Counter, seq: seq})
	return append(msgs, Message{Seq: seq, Sender: st.pub, Counter: b.Counter, Payload: b.Payload})
}

// joinCapped joins errors, keeping the first 8.
func joinCapped(errs []error) error {
	if len(errs) > 8 {
		errs = append(errs[:8], fmt.Errorf("and %d more", len(errs)-8))
	}
	return errors.Join(errs...)
}

// Applied confirms that the caller has durably applied every payload of
// sender up to counter (all yielded by Add). It persists the state.
func (v *Verifier) Applied(ctx context.Context, sender ed25519.PublicKey, counter uint64) error {
	st, ok := v.senders[string(sender)]
	if !ok || counter > st.delivered {
		return invalidf("counter %d of %s was not yielded", counter, fingerprint(sender))
	}
	if counter <= st.applied {
		return nil
	}
	st.applied = counter
	i := 0
	for i < len(st.pending) && st.pending[i].counter <= counter {
		i++
	}
	st.pending = st.pending[i:]
	return v.save(ctx)
}

// Settle reports the gaps left: call it when the relay has nothing more
// after Cursor. A sender with bundles buffered beyond a missing counter
// (a bundle the relay dropped) gives ErrMissing naming the counters.
func (v *Verifier) Settle() error {
	var gaps []string
	for _, st := range v.senders {
		if len(st.buf) == 0 {
			continue
		}
		lo := slices.Min(slices.Collect(maps.Keys(st.buf)))
		gaps = append(gaps, fmt.Sprintf("sender %s counters %d..%d", fingerprint(st.pub), st.delivered+1, lo-1))
	}
	if len(v.ahead) > 0 {
		lo := slices.Min(slices.Collect(maps.Keys(v.ahead)))
		gaps = append(gaps, fmt.Sprintf("sequence numbers %d..%d", v.contig+1, lo-1))
	}
	if v.overflow {
		gaps = append(gaps, "reorder buffer overflowed")
	}
	if len(gaps) == 0 {
		return nil
	}
	slices.Sort(gaps)
	return fmt.Errorf("%w: relay %s has nothing more but %s", ErrMissing, v.space.RelayURL, strings.Join(gaps, "; "))
}

// Refused is the number of bundles skipped this session because their
// sender was removed from the space before sealing them.
func (v *Verifier) Refused() int { return v.refused }

// Rebase starts the space's reading again as a new device would: the
// cursor goes back to 0 (the next page starts at the relay's low mark)
// and each sender's applied counter becomes the one in start (for a
// device whose store went back: the counters the relay has compacted;
// what they carried must come again from the members, see the replica's
// resend request). It persists the new state.
func (v *Verifier) Rebase(ctx context.Context, start []Position) error {
	v.senders = map[string]*senderState{}
	for _, p := range start {
		if len(p.Sender) != ed25519.PublicKeySize {
			return invalidf("start position with a %d-byte sender", len(p.Sender))
		}
		st := v.sender(p.Sender)
		st.applied = max(st.applied, p.Counter)
	}
	v.cursor, v.saved, v.acked = 0, nil, 0
	v.Reset()
	return v.save(ctx)
}

// Flush persists the cursor if it moved (Applied persists already; this
// covers pulls that held only replays).
func (v *Verifier) Flush(ctx context.Context) error { return v.save(ctx) }

func (v *Verifier) save(ctx context.Context) error {
	var pos []Position
	for _, st := range v.senders {
		if st.applied > 0 {
			pos = append(pos, Position{Sender: st.pub, Counter: st.applied})
		}
	}
	slices.SortFunc(pos, func(a, b Position) int { return bytes.Compare(a.Sender, b.Sender) })
	cursor := v.Done()
	raw := encodeRecvState(cursor, pos)
	if bytes.Equal(raw, v.saved) {
		return nil
	}
	if err := v.kv.Put(ctx, v.key, raw); err != nil {
		return fmt.Errorf("relay: save verifier state: %w", err)
	}
	v.saved, v.cursor = raw, cursor
	return nil
}

// Receive pulls everything the relay holds after Cursor (waiting up to
// wait for the first bundle), verifies it, calls apply for each payload in
// order and confirms it, then acknowledges to the relay what is done. It
// returns the number of payloads applied and, joined, ErrTampered for
// every bundle that failed verification and ErrMissing for gaps the relay
// did not fill. An error from apply stops it (after Reset) and is returned
// as is.
func (v *Verifier) Receive(ctx context.Context, c API, wait time.Duration, apply func(Message) error) (int, error) {
	n := 0
	var errs []error
	settled := false
	for round := 0; round < 10000; round++ {
		before := v.maxSeen
		page, err := c.PullPage(ctx, v.space, v.maxSeen, wait)
		if err != nil {
			return n, err
		}
		envs := page.Envelopes
		wait = 0
		msgs, aerr := v.AddPage(ctx, page)
		if aerr != nil {
			errs = append(errs, aerr)
		}
		for _, m := range msgs {
			if err := apply(m); err != nil {
				v.Reset()
				return n, err
			}
			if err := v.Applied(ctx, m.Sender, m.Counter); err != nil {
				v.Reset()
				return n, err
			}
			n++
		}
		if len(envs) == 0 || v.maxSeen == before {
			settled = true // the relay has nothing more (or only old news)
			break
		}
	}
	if settled {
		if err := v.Settle(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := v.save(ctx); err != nil {
		return n, err
	}
	// Acknowledge at least once per Receive, even if nothing moved: the
	// relay reads acknowledgements as signs of life (a space's expiry
	// policy drops members that stopped acknowledging).
	if done := v.Done(); done > v.acked || !v.ackSent {
		if err := c.Ack(ctx, v.space, done); err != nil {
			return n, err
		}
		v.acked, v.ackSent = done, true
	}
	return n, joinCapped(errs)
}

// Receiver state encoding: u8 version | u64 cursor | u16 count |
// count × (32-byte sender | u64 applied), senders sorted.
func encodeRecvState(cursor uint64, pos []Position) []byte {
	b := make([]byte, 0, 11+len(pos)*40)
	b = append(b, recvStateVersion)
	b = binary.BigEndian.AppendUint64(b, cursor)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pos)))
	for _, p := range pos {
		b = append(b, p.Sender...)
		b = binary.BigEndian.AppendUint64(b, p.Counter)
	}
	return b
}

const maxRecvSenders = 4096

func decodeRecvState(b []byte) (uint64, []Position, error) {
	bad := fmt.Errorf("%w: corrupt verifier state", ErrProtocol)
	if len(b) < 11 || b[0] != recvStateVersion {
		return 0, nil, bad
	}
	cursor := binary.BigEndian.Uint64(b[1:])
	n := int(binary.BigEndian.Uint16(b[9:]))
	rest := b[11:]
	if n > maxRecvSenders || len(rest) != n*40 {
		return 0, nil, bad
	}
	pos := make([]Position, 0, n)
	for i := range n {
		e := rest[i*40:]
		p := Position{Sender: ed25519.PublicKey(bytes.Clone(e[:32])), Counter: binary.BigEndian.Uint64(e[32:40])}
		if i > 0 && bytes.Compare(pos[i-1].Sender, p.Sender) >= 0 {
			return 0, nil, bad
		}
		pos = append(pos, p)
	}
	return cursor, pos, nil
}
