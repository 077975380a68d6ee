package replica

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/transport"
)

// Managing a space: removing members with key rotation, the expiry policy
// for members that stopped acknowledging, healing a device whose store
// went back, and what a space looks like (SpaceStatus).

// DefaultSpaceExpiry is how long a member may go without acknowledging
// before a space's policy drops it, unless SetSpaceExpiry changed it.
const DefaultSpaceExpiry = 90 * 24 * time.Hour

// MinSpaceExpiry is the shortest expiry SetSpaceExpiry accepts.
const MinSpaceExpiry = time.Hour

var (
	// ErrSpaceRemoved: this device was removed from the space (by another
	// member, or by the space's expiry policy). What it holds stays on
	// the device; it can come back only by a new invitation.
	ErrSpaceRemoved = errkind.New("replica: this device was removed from the space", errkind.Forbidden)
	// ErrUnknownMember: the device named is not a member of the space.
	ErrUnknownMember = errkind.New("replica: no such member in the space", errkind.NotFound)
)

// resendPrefix opens a resend request: a bundle payload (not a sync
// message) by which a device whose store went back asks the space's
// members to push everything they hold again. It is sealed like any
// bundle, so the relay cannot tell it from data.
var resendPrefix = []byte("ferry-relay-resend-v1\x00")

func resendRequest() []byte {
	b := make([]byte, len(resendPrefix)+16)
	copy(b, resendPrefix)
	_, _ = rand.Read(b[len(resendPrefix):]) // unique, so it is never taken for a retry
	return b
}

func isResendRequest(p []byte) bool {
	return len(p) == len(resendPrefix)+16 && bytes.HasPrefix(p, resendPrefix)
}

// refreshEpochs fetches the space's key-epoch records and takes the keys
// sealed to this device, and the removed keys, into space and rec (saved
// when they changed). A record that excludes this device means it was
// removed: ErrSpaceRemoved.
func (r *Replica) refreshEpochs(ctx context.Context, client relay.API, rec *spaceRecord, space relay.Space) (relay.Space, error) {
	raws, err := client.Epochs(ctx, space)
	if err != nil {
		return space, err
	}
	self := r.id.Public().(ed25519.PublicKey)
	changed := false
	for _, raw := range raws {
		er, err := relay.OpenEpochRecord(space, raw, r.id)
		switch {
		case errors.Is(err, relay.ErrNoKey) && (hasEpoch(space, er.Epoch) || er.Epoch <= space.Epoch()):
			// An epoch from before this device joined (its invitation
			// carried the key, or it reads nothing that old).
		case errors.Is(err, relay.ErrNoKey):
			if slices.ContainsFunc(er.Removed, func(p relay.Position) bool { return p.Sender.Equal(self) }) {
				return space, fmt.Errorf("%w: at key epoch %d, by %s", ErrSpaceRemoved, er.Epoch, short(transport.Fingerprint(er.Signer)))
			}
			return space, fmt.Errorf("%w: key epoch %d", relay.ErrNoKey, er.Epoch)
		case err != nil:
			return space, err
		}
		// A key removed at an earlier epoch signs nothing any more.
		if slices.ContainsFunc(rec.Removed, func(p startPosition) bool {
			return bytes.Equal(p.Sender, er.Signer)
		}) {
			return space, fmt.Errorf("%w: key epoch %d signed by a removed member", relay.ErrTampered, er.Epoch)
		}
		if er.HasKey && !hasEpoch(space, er.Epoch) {
			space = space.WithEpoch(relay.EpochKey{Epoch: er.Epoch, Key: er.Key})
			changed = true
		}
		for _, p := range er.Removed {
			if !slices.ContainsFunc(rec.Removed, func(q startPosition) bool { return bytes.Equal(q.Sender, p.Sender) }) {
				rec.Removed = append(rec.Removed, startPosition{Sender: p.Sender, Counter: p.Counter})
				changed = true
			}
		}
	}
	if changed {
		if err := r.putSpace(ctx, *rec, space); err != nil {
			return space, err
		}
	}
	return space, nil
}

// readmitted forgets the removal of keys that a member invited back: the
// current member list lists them again, signed by a key never removed.
// Their new bundles are then accepted again.
func (r *Replica) readmitted(ctx context.Context, s *relaySession) error {
	if len(s.rec.Removed) == 0 {
		return nil
	}
	sm, err := s.client.Members(ctx, s.space)
	if err != nil {
		return err
	}
	isRemoved := func(k []byte) bool {
		return slices.ContainsFunc(s.rec.Removed, func(p startPosition) bool { return bytes.Equal(p.Sender, k) })
	}
	if isRemoved(sm.Signer) {
		return nil
	}
	kept := slices.DeleteFunc(slices.Clone(s.rec.Removed), func(p startPosition) bool { return sm.Has(p.Sender) })
	if len(kept) == len(s.rec.Removed) {
		return nil
	}
	s.rec.Removed = kept
	return r.putSpace(ctx, s.rec, s.space)
}

func hasEpoch(s relay.Space, e uint64) bool {
	return slices.ContainsFunc(s.Epochs, func(k relay.EpochKey) bool { return k.Epoch == e })
}

// selfStatus is this device's entry in the relay's status.
func (r *Replica) selfStatus(rs relay.SpaceStatus) (relay.PeerStatus, bool) {
	self := r.id.Public().(ed25519.PublicKey)
	for _, p := range rs.Peers {
		if bytes.Equal(p.Key, self) {
			return p, true
		}
	}
	return relay.PeerStatus{}, false
}

// healIfWentBack notices that this device's store went back to an older
// copy (restored, or a damaged log rolled back): the relay holds more of
// this device's bundles than its sender remembers, or this device had
// acknowledged more than its receiver remembers. Then the bundles it has
// not applied may be compacted already: it starts reading the space again
// where the relay's log starts, takes up its counters after the relay's,
// and (in syncRelay) asks the members to send everything again.
func (r *Replica) healIfWentBack(ctx context.Context, s *relaySession) error {
	me, ok := r.selfStatus(s.rs)
	if !ok {
		return nil
	}
	_, synced, err := r.store.Slots(nsPeer+s.peer).Get(ctx, "synced")
	if err != nil {
		return err
	}
	var why string
	switch {
	case me.Counter > s.sender.Counter():
		why = fmt.Sprintf("the relay holds %d bundles from this device, its store remembers %d", me.Counter, s.sender.Counter())
	case synced && me.Cursor > s.v.Cursor():
		why = fmt.Sprintf("this device had acknowledged the space up to %d, its store remembers %d", me.Cursor, s.v.Cursor())
	default:
		return nil
	}
	if err := s.sender.Adopt(ctx, me.Counter); err != nil {
		return err
	}
	var start []relay.Position
	for _, p := range s.rs.Peers {
		if p.Compacted > 0 {
			start = append(start, relay.Position{Sender: ed25519.PublicKey(p.Key), Counter: p.Compacted})
		}
	}
	if err := s.v.Rebase(ctx, start); err != nil {
		return err
	}
	s.heal = true
	r.status.warn(s.peer, "this store went back to an older copy ("+why+"); asked the space's members to send everything again")
	return nil
}

// expireMembers drops the members whose last acknowledgement is older
// than the space's policy, rotating the key, and returns their
// fingerprints. The policy is judged on this device's clock against the
// times the relay reports.
func (r *Replica) expireMembers(ctx context.Context, s *relaySession) ([]string, error) {
	after := s.rec.ExpireAfter
	if after == 0 {
		after = DefaultSpaceExpiry
	}
	if after < 0 {
		return nil, nil
	}
	now := relayNow(s.rs, r.opts.Now())
	self := r.id.Public().(ed25519.PublicKey)
	var dead []ed25519.PublicKey
	var fps []string
	for _, p := range s.rs.Peers {
		if !p.Member || bytes.Equal(p.Key, self) {
			continue
		}
		if last := time.UnixMilli(p.LastAck); now.Sub(last) > after {
			dead = append(dead, ed25519.PublicKey(p.Key))
			fps = append(fps, transport.Fingerprint(p.Key))
		}
	}
	if len(dead) == 0 {
		return nil, nil
	}
	reason := fmt.Sprintf("no acknowledgement for more than %s (the space's policy)", formatDays(after))
	if _, err := r.removeKeys(ctx, s, dead, consent.MemberExpired, reason); err != nil {
		return nil, fmt.Errorf("expiry policy: %w", err)
	}
	r.status.warn(s.peer, fmt.Sprintf("dropped %d member(s) silent for more than %s: %s; the relay compacts again",
		len(fps), formatDays(after), strings.Join(shorts(fps), ", ")))
	return fps, nil
}

// relayNow is the relay's time when it answered, or (a relay that does
// not say) this device's.
func relayNow(rs relay.SpaceStatus, local time.Time) time.Time {
	if rs.Now > 0 {
		return time.UnixMilli(rs.Now)
	}
	return local
}

func shorts(fps []string) []string {
	out := make([]string, len(fps))
	for i, f := range fps {
		out[i] = short(f)
	}
	return out
}

// formatDays prints a duration in days when it is a whole number of them.
func formatDays(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// SpaceChange is what RemoveMember did.
type SpaceChange struct {
	Space  string `json:"space"`
	Member string `json:"member"` // fingerprint
	Epoch  uint64 `json:"epoch"`  // the key epoch after the rotation
}

// RemoveMember removes a device (its identity fingerprint, as `ferry id`
// prints it) from the space and rotates the space key: it first pulls
// what the space holds, then draws a new key, seals it to the remaining
// members only and posts it to the relay as the next key epoch, then
// submits the member list without the device. From then on the relay
// refuses the device's requests, and nothing sealed afterwards opens
// with the keys it holds; its bundles sealed after the last one this
// device applied are refused by every member that fetched the rotation.
// A device not in the list is ErrUnknownMember; removing oneself is
// ErrInvalid. The change is recorded in the consent ledger.
func (r *Replica) RemoveMember(ctx context.Context, spaceID, member string) (SpaceChange, error) {
	fp, err := transport.ParseFingerprint(member)
	if err != nil {
		return SpaceChange{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if fp == r.ID() {
		return SpaceChange{}, fmt.Errorf("%w: a device cannot remove itself (remove it from another member, or revoke the space's grants with ferry untrust space:%s)", ErrInvalid, spaceID)
	}
	ctx, done, err := r.session(ctx)
	if err != nil {
		return SpaceChange{}, err
	}
	defer done()
	rec, space, err := r.loadSpace(ctx, spaceID)
	if err != nil {
		return SpaceChange{}, err
	}
	if rec.Gone != "" {
		return SpaceChange{}, fmt.Errorf("%w: %s: %s", ErrSpaceRemoved, short(space.ID), rec.Gone)
	}
	peer := spacePeer(space.ID)
	s, err := r.openRelaySession(ctx, rec, space, peer)
	if err == nil {
		var st RelayStats
		err = r.pullRelay(ctx, s, &st)
	}
	if err != nil {
		if errors.Is(err, relay.ErrRemoved) || errors.Is(err, ErrSpaceRemoved) {
			err = r.markRemoved(context.WithoutCancel(ctx), space.ID, err)
		}
		return SpaceChange{}, fmt.Errorf("replica: remove member: %w", err)
	}
	var key ed25519.PublicKey
	for _, p := range s.rs.Peers {
		if p.Member && transport.Fingerprint(p.Key) == fp {
			key = ed25519.PublicKey(p.Key)
		}
	}
	if key == nil {
		return SpaceChange{}, fmt.Errorf("%w: %s in space %s", ErrUnknownMember, short(fp), short(space.ID))
	}
	epoch, err := r.removeKeys(ctx, s, []ed25519.PublicKey{key}, consent.MemberRemoved, "removed by this device")
	if err != nil {
		return SpaceChange{}, fmt.Errorf("replica: remove member: %w", err)
	}
	return SpaceChange{Space: space.ID, Member: fp, Epoch: epoch}, nil
}

// removeKeys rotates the space key excluding keys, then removes them from
// the member list, and records the change. It returns the new epoch.
func (r *Replica) removeKeys(ctx context.Context, s *relaySession, keys []ed25519.PublicKey, change, reason string) (uint64, error) {
	sm, err := s.client.Members(ctx, s.space)
	if err != nil {
		return 0, err
	}
	var remaining []ed25519.PublicKey
	for _, k := range sm.Keys {
		if !slices.ContainsFunc(keys, func(x ed25519.PublicKey) bool { return x.Equal(k) }) {
			remaining = append(remaining, k)
		}
	}
	if len(remaining) == 0 {
		return 0, fmt.Errorf("%w: removing every member", ErrInvalid)
	}
	applied := map[string]uint64{}
	for _, p := range s.v.Positions() {
		applied[string(p.Sender)] = p.Counter
	}
	var removed []relay.Position
	for _, k := range keys {
		removed = append(removed, relay.Position{Sender: k, Counter: applied[string(k)]})
	}
	var nk [relay.SpaceKeySize]byte
	if _, err := rand.Read(nk[:]); err != nil {
		return 0, err
	}
	epoch := max(s.space.Epoch(), s.rs.Epoch) + 1
	raw, err := relay.NewEpochRecord(s.space, r.id, epoch, nk, remaining, removed)
	if err != nil {
		return 0, err
	}
	// The new key first: if what follows fails, the removed device is
	// still listed but can read nothing sealed from now on; running the
	// removal again finishes it.
	if err := s.client.PutEpoch(ctx, s.space, raw); err != nil {
		return 0, fmt.Errorf("key rotation: %w", err)
	}
	s.space = s.space.WithEpoch(relay.EpochKey{Epoch: epoch, Key: nk})
	for _, p := range removed {
		s.rec.Removed = append(s.rec.Removed, startPosition{Sender: p.Sender, Counter: p.Counter})
	}
	if err := r.putSpace(ctx, s.rec, s.space); err != nil {
		return 0, err
	}
	if _, err := s.client.UpdateMembers(ctx, s.space, nil, keys); err != nil {
		return epoch, fmt.Errorf("member list: %w", err)
	}
	for _, k := range keys {
		if err := r.recordMembership(ctx, s.space.ID, transport.Fingerprint(k), change, epoch, reason); err != nil {
			return epoch, err
		}
	}
	return epoch, nil
}

// markRemoved records that this device was removed from the space (the
// relay said so, or a key-epoch record excluded it) and returns the
// error to report: ErrSpaceRemoved.
func (r *Replica) markRemoved(ctx context.Context, spaceID string, cause error) error {
	rec, space, err := r.loadSpace(ctx, spaceID)
	if err != nil {
		return errors.Join(fmt.Errorf("%w: %w", ErrSpaceRemoved, cause), err)
	}
	if rec.Gone == "" {
		rec.Gone = "removed by another member at " + r.opts.Now().UTC().Format(time.RFC3339)
		if err := r.putSpace(ctx, rec, space); err != nil {
			return errors.Join(fmt.Errorf("%w: %w", ErrSpaceRemoved, cause), err)
		}
		if err := r.recordMembership(ctx, spaceID, r.ID(), consent.MemberLeft, space.Epoch(), "removed by another member"); err != nil {
			return errors.Join(fmt.Errorf("%w: %w", ErrSpaceRemoved, cause), err)
		}
		r.status.warn(spacePeer(spaceID), "this device was removed from the space; what it holds stays here; rejoin by a new invitation")
	}
	if errors.Is(cause, ErrSpaceRemoved) {
		return cause
	}
	return fmt.Errorf("%w: %s (the relay refuses it: %w)", ErrSpaceRemoved, short(spaceID), cause)
}

func (r *Replica) recordMembership(ctx context.Context, spaceID, member, change string, epoch uint64, reason string) error {
	if err := r.consent.RecordMembership(ctx, consent.Membership{Space: spacePeer(spaceID), Member: member, Change: change, Epoch: epoch, Reason: reason}); err != nil {
		return fmt.Errorf("replica: ledger: %w", err)
	}
	return nil
}

// SetSpaceExpiry sets the space's policy for members that stop
// acknowledging: a member silent for longer than d is dropped (with key
// rotation) at the next sync of this device. d < 0 disables it, d == 0
// restores DefaultSpaceExpiry; 0 < d < MinSpaceExpiry is ErrInvalid. The
// policy is this device's: each device enforces the one it holds.
func (r *Replica) SetSpaceExpiry(ctx context.Context, spaceID string, d time.Duration) error {
	if d > 0 && d < MinSpaceExpiry {
		return fmt.Errorf("%w: expiry %s is shorter than %s", ErrInvalid, d, MinSpaceExpiry)
	}
	rec, space, err := r.loadSpace(ctx, spaceID)
	if err != nil {
		return err
	}
	rec.ExpireAfter = d
	return r.putSpace(ctx, rec, space)
}

// SpaceMember is one member of a space as SpaceStatus shows it.
type SpaceMember struct {
	Fingerprint string `json:"fingerprint"`
	Self        bool   `json:"self,omitempty"`
	// LastAck is its last acknowledgement as the relay reports it (its
	// addition if it never acknowledged).
	LastAck time.Time `json:"last_ack"`
	// Cursor is how far it acknowledged the relay's log.
	Cursor uint64 `json:"cursor"`
	// DropAt is when the expiry policy drops it if it stays silent (zero
	// when the policy is off, and for this device). Like LastAck it is on
	// the relay's clock.
	DropAt time.Time `json:"drop_at,omitzero"`
}

// SpaceInfo is a space as SpaceStatus shows it.
type SpaceInfo struct {
	ID    string `json:"id"`
	Relay string `json:"relay"`
	// Epoch is the key epoch this device seals under.
	Epoch uint64 `json:"epoch"`
	// ExpireAfter is the policy in force (negative: never).
	ExpireAfter time.Duration `json:"expire_after_ns"`
	// Removed says why this device is no longer a member ("" if it is).
	Removed string        `json:"removed,omitempty"`
	Members []SpaceMember `json:"members,omitempty"`
	// Bundles and Bytes are what the relay holds; Low is its low mark
	// (everything at or below is compacted), Head its last sequence
	// number.
	Bundles int64  `json:"bundles"`
	Bytes   int64  `json:"bytes"`
	Low     uint64 `json:"low"`
	Head    uint64 `json:"head"`
	// Collections are those this device grants the space.
	Collections []string `json:"collections"`
	// Changes are the space's membership changes from the consent ledger.
	Changes []consent.Membership `json:"changes,omitempty"`
}

// SpaceStatus asks the relay about the space: its members with their last
// acknowledgements, what it holds, and this device's policy and grants.
// A removed device gets its local record and ErrSpaceRemoved is not
// returned: Removed says so.
func (r *Replica) SpaceStatus(ctx context.Context, spaceID string) (SpaceInfo, error) {
	rec, space, err := r.loadSpace(ctx, spaceID)
	if err != nil {
		return SpaceInfo{}, err
	}
	info := SpaceInfo{ID: space.ID, Relay: space.RelayURL, Epoch: space.Epoch(), ExpireAfter: rec.ExpireAfter, Removed: rec.Gone, Collections: []string{}}
	if info.ExpireAfter == 0 {
		info.ExpireAfter = DefaultSpaceExpiry
	}
	for _, g := range r.consent.Live() {
		if g.Destination == spacePeer(space.ID) && g.Purpose == consent.PurposeDeviceSync {
			info.Collections = append(info.Collections, g.Collection)
		}
	}
	if info.Changes, err = r.consent.Memberships(ctx, spacePeer(space.ID)); err != nil {
		return info, err
	}
	if rec.Gone != "" {
		return info, nil
	}
	rs, err := r.relayClient(space.RelayURL).Status(ctx, space)
	if errors.Is(err, relay.ErrRemoved) {
		info.Removed = "removed by another member"
		// Best effort: the next sync marks the space again if this fails.
		_ = r.markRemoved(context.WithoutCancel(ctx), space.ID, err)
		return info, nil
	}
	if err != nil {
		return info, fmt.Errorf("replica: space status: %w", err)
	}
	info.Bundles, info.Bytes, info.Low, info.Head = rs.Bundles, rs.Bytes, rs.Low, rs.Head
	for _, p := range rs.Peers {
		if !p.Member {
			continue
		}
		m := SpaceMember{Fingerprint: transport.Fingerprint(p.Key), LastAck: time.UnixMilli(p.LastAck).UTC(), Cursor: p.Cursor}
		m.Self = m.Fingerprint == r.ID()
		if !m.Self && info.ExpireAfter > 0 {
			m.DropAt = m.LastAck.Add(info.ExpireAfter)
		}
		info.Members = append(info.Members, m)
	}
	slices.SortFunc(info.Members, func(a, b SpaceMember) int { return strings.Compare(a.Fingerprint, b.Fingerprint) })
	return info, nil
}

// SpaceRemoved reports whether this device knows it was removed from the
// space (read locally; false for an unknown space).
func (r *Replica) SpaceRemoved(ctx context.Context, spaceID string) bool {
	rec, _, err := r.loadSpace(ctx, spaceID)
	return err == nil && rec.Gone != ""
}
