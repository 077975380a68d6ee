package replica

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/internal/names"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// Sync through a relay: devices of one user that are rarely online
// together form a space. Each pushes sealed bundles of its changes to the
// relay and pulls the others'. The relay is a "peer" named "space:<id>"
// for everything else in this package: consent grants, the heads each
// record is known to hold there, and status.

const nsSpaces = "spaces" // space id -> spaceRecord

// ErrUnknownSpace: this replica is not a member of that space.
var ErrUnknownSpace = errkind.New("replica: no such space", errkind.NotFound)

// spaceRecord is what a replica keeps about a space it belongs to.
type spaceRecord struct {
	Space []byte          `json:"space"` // relay.Space, binary (with its key epochs)
	Start []startPosition `json:"start,omitempty"`
	// Removed lists the keys removed from the space by key-epoch records,
	// each with the last counter accepted from it (relay.EpochRecord).
	Removed []startPosition `json:"removed,omitempty"`
	// Gone says this device was removed from the space, and why.
	Gone string `json:"gone,omitempty"`
	// ExpireAfter is the space's policy for silent members: 0 the
	// default (DefaultSpaceExpiry), negative never.
	ExpireAfter time.Duration `json:"expire_after,omitempty"`
}

type startPosition struct {
	Sender  []byte `json:"sender"`
	Counter uint64 `json:"counter"`
}

func spacePeer(id string) string { return "space:" + id }

// RelayStats counts what one relay sync moved.
type RelayStats struct {
	Space          string `json:"space"`
	BundlesPushed  int    `json:"bundles_pushed"`
	RecordsPushed  int    `json:"records_pushed"`
	BytesPushed    int64  `json:"bytes_pushed"`
	BundlesPulled  int    `json:"bundles_pulled"`
	RecordsApplied int    `json:"records_applied"`
	Conflicts      int    `json:"conflicts"`
	// InvalidNames counts records left out because their collection
	// name or id breaks the naming rule: pulled ones are refused, stored
	// ones (written before the rule) are not pushed.
	InvalidNames int `json:"invalid_names,omitempty"`
	// ClockSkew lists the writers whose writes arrived stamped ahead of
	// this replica's clock beyond Options.MaxClockDrift (see SyncStats).
	ClockSkew []ClockSkew `json:"clock_skew,omitempty"`
	// Refused counts bundles sealed by removed members after their
	// removal (skipped, never applied).
	Refused int `json:"refused,omitempty"`
	// Dropped lists the members (fingerprints) the space's expiry policy
	// removed during this sync.
	Dropped []string `json:"dropped,omitempty"`
	// Healed says this device's store had gone back and it asked the
	// space's members to send everything again.
	Healed bool `json:"healed,omitempty"`
}

// HTTPRelay returns an Options.Relay that reaches relays over HTTP with
// client (http.DefaultClient when nil). It is the default.
func HTTPRelay(client *http.Client) func(url string, identity ed25519.PrivateKey) relay.API {
	return func(url string, identity ed25519.PrivateKey) relay.API {
		return &relay.Client{URL: url, Identity: identity, HTTP: client}
	}
}

// relayClient is the relay API for the relay at url.
func (r *Replica) relayClient(url string) relay.API {
	if r.opts.Relay == nil {
		return HTTPRelay(nil)(url, r.id)
	}
	return r.opts.Relay(url, r.id)
}

// CreateSpace creates a space on the relay at url, with this replica as
// its first member, and grants the space device-sync of collections.
func (r *Replica) CreateSpace(ctx context.Context, url string, collections []string) (relay.Space, error) {
	if err := checkSpaceCollections(collections); err != nil {
		return relay.Space{}, err
	}
	space, err := relay.NewSpace(url)
	if err != nil {
		return relay.Space{}, fmt.Errorf("replica: space: %w", err)
	}
	if err := r.relayClient(url).CreateSpace(ctx, space); err != nil {
		return relay.Space{}, fmt.Errorf("replica: create space: %w", err)
	}
	if err := r.saveSpace(ctx, space, nil); err != nil {
		return relay.Space{}, err
	}
	if err := r.recordMembership(ctx, space.ID, r.ID(), consent.MemberCreated, 0, ""); err != nil {
		return relay.Space{}, err
	}
	return space, r.grantSpace(ctx, space, collections)
}

// checkSpaceCollections refuses an empty list or a name outside the rule
// before anything reaches the relay.
func checkSpaceCollections(collections []string) error {
	if len(collections) == 0 {
		return fmt.Errorf("%w: name the collections the space syncs", ErrInvalid)
	}
	for _, c := range collections {
		if err := checkCollection(c); err != nil {
			return err
		}
	}
	return nil
}

func (r *Replica) grantSpace(ctx context.Context, space relay.Space, collections []string) error {
	for _, c := range collections {
		if _, err := r.consent.Grant(ctx, consent.Grant{Collection: c, Purpose: consent.PurposeDeviceSync, Destination: spacePeer(space.ID)}); err != nil {
			return fmt.Errorf("replica: space grant: %w", err)
		}
	}
	return nil
}

func (r *Replica) saveSpace(ctx context.Context, space relay.Space, start []relay.Position) error {
	sb, err := space.MarshalBinary()
	if err != nil {
		return err
	}
	rec := spaceRecord{Space: sb}
	for _, p := range start {
		rec.Start = append(rec.Start, startPosition{Sender: p.Sender, Counter: p.Counter})
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.store.Slots(nsSpaces).Put(ctx, space.ID, b); err != nil {
		return fmt.Errorf("replica: save space: %w", err)
	}
	return nil
}

// Space returns a space this replica belongs to, with where to start
// reading it.
func (r *Replica) Space(ctx context.Context, id string) (relay.Space, []relay.Position, error) {
	rec, space, err := r.loadSpace(ctx, id)
	if err != nil {
		return relay.Space{}, nil, err
	}
	return space, positions(rec.Start), nil
}

// loadSpace reads a space's record.
func (r *Replica) loadSpace(ctx context.Context, id string) (spaceRecord, relay.Space, error) {
	b, ok, err := r.store.Slots(nsSpaces).Get(ctx, id)
	if err != nil {
		return spaceRecord{}, relay.Space{}, fmt.Errorf("replica: space: %w", err)
	}
	if !ok {
		return spaceRecord{}, relay.Space{}, fmt.Errorf("%w: %s", ErrUnknownSpace, id)
	}
	var rec spaceRecord
	var space relay.Space
	if err := json.Unmarshal(b, &rec); err != nil {
		return spaceRecord{}, relay.Space{}, fmt.Errorf("replica: space: %w: %w", storage.ErrCorrupt, err)
	}
	if err := space.UnmarshalBinary(rec.Space); err != nil {
		return spaceRecord{}, relay.Space{}, fmt.Errorf("replica: space: %w: %w", storage.ErrCorrupt, err)
	}
	return rec, space, nil
}

// putSpace writes a space's record with space (its keys) in it.
func (r *Replica) putSpace(ctx context.Context, rec spaceRecord, space relay.Space) error {
	sb, err := space.MarshalBinary()
	if err != nil {
		return err
	}
	rec.Space = sb
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.store.Slots(nsSpaces).Put(ctx, space.ID, b); err != nil {
		return fmt.Errorf("replica: save space: %w", err)
	}
	return nil
}

func positions(ps []startPosition) []relay.Position {
	var out []relay.Position
	for _, p := range ps {
		out = append(out, relay.Position{Sender: ed25519.PublicKey(p.Sender), Counter: p.Counter})
	}
	return out
}

// Spaces lists the ids of the spaces this replica belongs to.
func (r *Replica) Spaces(ctx context.Context) ([]string, error) {
	var ids []string
	err := r.store.Slots(nsSpaces).Range(ctx, func(k string, _ []byte) error {
		ids = append(ids, k)
		return nil
	})
	return ids, err
}

// JoinCode is what a new device shows so that a member can invite it: its
// Ed25519 public key (for the relay's member list) and its age X25519
// recipient (to seal the invitation to). It holds no secret.
func (r *Replica) JoinCode() (string, error) {
	id, err := relay.DeriveInviteIdentity(r.id)
	if err != nil {
		return "", err
	}
	pub := r.id.Public().(ed25519.PublicKey)
	return "ferry-join1:" + base64.RawURLEncoding.EncodeToString(pub) + ":" + id.Recipient().String(), nil
}

func parseJoinCode(code string) (ed25519.PublicKey, *age.X25519Recipient, error) {
	parts := strings.Split(strings.TrimSpace(code), ":")
	if len(parts) != 3 || parts[0] != "ferry-join1" {
		return nil, nil, fmt.Errorf("%w: not a join code", ErrInvalid)
	}
	pub, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("%w: bad key in join code", ErrInvalid)
	}
	rec, err := relay.ParseInviteRecipient(parts[2])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return ed25519.PublicKey(pub), rec, nil
}

// Invite adds the device whose join code this is to the space, and returns
// the sealed invitation to hand it (any channel will do: only that device
// can open it). The next push from this replica carries every record in
// full, so the new device can start from nothing even after the relay
// compacted older bundles.
func (r *Replica) Invite(ctx context.Context, spaceID, joinCode string) ([]byte, error) {
	space, _, err := r.Space(ctx, spaceID)
	if err != nil {
		return nil, err
	}
	pub, recipient, err := parseJoinCode(joinCode)
	if err != nil {
		return nil, err
	}
	if _, err := r.relayClient(space.RelayURL).UpdateMembers(ctx, space, []ed25519.PublicKey{pub}, nil); err != nil {
		return nil, fmt.Errorf("replica: add member: %w", err)
	}
	v, err := relay.NewVerifier(ctx, space, r.store.Slots("relay/"+space.ID), relay.VerifierOptions{Self: r.id.Public().(ed25519.PublicKey)})
	if err != nil {
		return nil, fmt.Errorf("replica: invite: %w", err)
	}
	start := v.Positions()
	if sender, err := relay.NewSender(ctx, r.relayClient(space.RelayURL), space, r.store.Slots("relay/"+space.ID)); err == nil {
		start = append(start, sender.Position())
	}
	inv, err := relay.Invite(space, recipient, start...)
	if err != nil {
		return nil, fmt.Errorf("replica: invite: %w", err)
	}
	if err := r.forgetSpaceHeads(ctx, space.ID); err != nil {
		return nil, err
	}
	if err := r.recordMembership(ctx, space.ID, transport.Fingerprint(pub), consent.MemberAdded, space.Epoch(), ""); err != nil {
		return nil, err
	}
	return inv, nil
}

// forgetSpaceHeads makes the next push resend every record in full.
func (r *Replica) forgetSpaceHeads(ctx context.Context, spaceID string) error {
	peer := spacePeer(spaceID)
	var keys []string
	if err := r.store.Slots(nsShared+peer).Range(ctx, func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		return err
	}
	var b storage.Batch
	for _, k := range keys {
		b.Slots = append(b.Slots, storage.SlotWrite{Namespace: nsShared + peer, Key: k, Delete: true})
	}
	b.Slots = append(b.Slots, storage.SlotWrite{Namespace: nsPeer + peer, Key: "pushed", Delete: true},
		storage.SlotWrite{Namespace: nsPeer + peer, Key: "fullpush", Value: []byte{1}})
	if _, err := r.store.Write(ctx, b); err != nil {
		return fmt.Errorf("replica: invite: %w", err)
	}
	return nil
}

// JoinSpace opens an invitation sealed to this device and makes it a
// member of the space, granting the space device-sync of collections.
func (r *Replica) JoinSpace(ctx context.Context, invitation []byte, collections []string) (relay.Space, error) {
	if err := checkSpaceCollections(collections); err != nil {
		return relay.Space{}, err
	}
	id, err := relay.DeriveInviteIdentity(r.id)
	if err != nil {
		return relay.Space{}, err
	}
	inv, err := relay.AcceptInvitation(invitation, id)
	if err != nil {
		return relay.Space{}, fmt.Errorf("replica: join: %w", err)
	}
	if err := r.saveSpace(ctx, inv.Space, inv.Start); err != nil {
		return relay.Space{}, err
	}
	if err := r.recordMembership(ctx, inv.Space.ID, r.ID(), consent.MemberJoined, inv.Space.Epoch(), ""); err != nil {
		return relay.Space{}, err
	}
	return inv.Space, r.grantSpace(ctx, inv.Space, collections)
}

// SyncRelay pushes this replica's changes to the space's relay and pulls
// and applies the other members'. Only collections granted to the space
// are pushed; a space that holds no live device-sync grant is refused
// (ErrNoConsent), as a peer is. When the space's grants changed since the
// last push (a collection granted late, or revoked), the push rescans
// this replica's changes from the start, so a newly granted collection's
// older records go too. An over-quota relay refuses the push with
// relay.ErrQuota: nothing is lost, the changes stay queued and the next
// SyncRelay retries. A relay that tampers with, drops or replays bundles
// is detected (relay.ErrTampered, relay.ErrMissing); a forged change is
// never applied.
//
// It also keeps the space: it fetches new key epochs (a member removed
// another), heals this device when its store went back to an older copy
// (it asks the others to send everything again, and answers such requests
// from the others), and drops the members that stopped acknowledging for
// longer than the space's policy (SetSpaceExpiry), rotating the key. A
// device that was removed gets ErrSpaceRemoved, now and at every later
// call.
func (r *Replica) SyncRelay(ctx context.Context, spaceID string) (RelayStats, error) {
	ctx, done, err := r.session(ctx)
	if err != nil {
		return RelayStats{}, err
	}
	defer done()
	rec, space, err := r.loadSpace(ctx, spaceID)
	if err != nil {
		return RelayStats{}, err
	}
	if rec.Gone != "" {
		return RelayStats{Space: space.ID}, fmt.Errorf("%w: %s: %s", ErrSpaceRemoved, short(space.ID), rec.Gone)
	}
	peer := spacePeer(space.ID)
	st := RelayStats{Space: space.ID}
	if !r.consent.AnyAllowed(peer, consent.PurposeDeviceSync) {
		return st, fmt.Errorf("%w: space %s holds no live device-sync grant (grant one with ferry consent grant COLLECTION --to %s --purpose device-sync)",
			ErrNoConsent, short(space.ID), peer)
	}
	r.status.unwarn(peer)
	err = r.withStatus(ctx, peer, func() (SyncStats, error) {
		err := r.syncRelay(ctx, rec, space, peer, &st)
		if errors.Is(err, relay.ErrRemoved) || errors.Is(err, ErrSpaceRemoved) {
			err = r.markRemoved(context.WithoutCancel(ctx), space.ID, err)
		}
		st.ClockSkew = r.status.sessionSkews(peer)
		return SyncStats{Peer: peer, RecordsSent: st.RecordsPushed, RecordsReceived: st.RecordsApplied,
			BytesSent: st.BytesPushed, Conflicts: st.Conflicts, InvalidNames: st.InvalidNames, ClockSkew: st.ClockSkew}, err
	})
	if err != nil {
		return st, fmt.Errorf("replica: relay sync %s: %w", short(space.ID), err)
	}
	return st, nil
}

// relaySession is one sync with a space: the relay's view, this device's
// receiving and sending state.
type relaySession struct {
	client relay.API
	kv     *storage.Slots
	space  relay.Space
	rec    spaceRecord
	peer   string
	rs     relay.SpaceStatus
	v      *relay.Verifier
	sender *relay.Sender
	heal   bool // this device's store went back: ask the others to resend
	resend bool // another member asked for everything again
}

// openRelaySession fetches the key epochs and the relay's status, loads
// the verifier and sender, and notices a store that went back.
func (r *Replica) openRelaySession(ctx context.Context, rec spaceRecord, space relay.Space, peer string) (*relaySession, error) {
	s := &relaySession{client: r.relayClient(space.RelayURL), kv: r.store.Slots("relay/" + space.ID), rec: rec, peer: peer}
	var err error
	s.space, err = r.refreshEpochs(ctx, s.client, &s.rec, space)
	if err != nil {
		return nil, err
	}
	if s.rs, err = s.client.Status(ctx, s.space); err != nil {
		return nil, err
	}
	if err := r.readmitted(ctx, s); err != nil {
		return nil, err
	}
	self := r.id.Public().(ed25519.PublicKey)
	s.v, err = relay.NewVerifier(ctx, s.space, s.kv, relay.VerifierOptions{Start: positions(rec.Start), Self: self, Removed: positions(s.rec.Removed)})
	if err != nil {
		return nil, err
	}
	if s.sender, err = relay.NewSender(ctx, s.client, s.space, s.kv); err != nil {
		return nil, err
	}
	if err := r.healIfWentBack(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

func (r *Replica) syncRelay(ctx context.Context, rec spaceRecord, space relay.Space, peer string, st *RelayStats) error {
	h := &host{r: r}
	defer func() {
		if err := h.recordShares(context.WithoutCancel(ctx)); err != nil {
			_ = err // the share happened; a ledger failure is reported by the next write
		}
	}()
	s, err := r.openRelaySession(ctx, rec, space, peer)
	if err != nil {
		return err
	}
	// Pull first: what the others pushed makes this replica's own push
	// smaller (records it now shares need no resend).
	if err := r.pullRelay(ctx, s, st); err != nil {
		return err
	}
	if s.resend {
		// Another member's store went back: everything goes again, whole.
		if err := r.forgetSpaceHeads(ctx, s.space.ID); err != nil {
			return err
		}
	}
	if s.heal {
		st.Healed = true
		seq, err := s.sender.Send(ctx, resendRequest())
		if err != nil {
			return fmt.Errorf("push: resend request: %w", err)
		}
		st.BundlesPushed++
		if _, err := r.store.Write(ctx, storage.Batch{Slots: []storage.SlotWrite{r.uintWrite(nsPeer+peer, "healing", seq)}}); err != nil {
			return err
		}
	}
	if err := r.pushRelay(ctx, s, h, st); err != nil {
		return err
	}
	if _, err := r.store.Write(ctx, storage.Batch{Slots: []storage.SlotWrite{{Namespace: nsPeer + peer, Key: "synced", Value: []byte{1}}}}); err != nil {
		return err
	}
	dropped, err := r.expireMembers(ctx, s)
	st.Dropped = dropped
	return err
}

// pullRelay receives and applies the other members' bundles.
func (r *Replica) pullRelay(ctx context.Context, s *relaySession, st *RelayStats) error {
	peer, space := s.peer, s.space
	pending := r.store.Slots("relay-pending/" + space.ID)
	apply := func(recs []recordChanges) error {
		recs, bad := dropInvalid(recs)
		st.InvalidNames += bad
		needs, conflicts, _, err := r.applyRecords(ctx, peer, recs, 0)
		if err != nil {
			return err
		}
		st.Conflicts += conflicts
		st.RecordsApplied += len(recs) - len(needs)
		// A record whose dependencies have not arrived (a device that
		// joined after older bundles were compacted, before a member's
		// full push) waits here; it is retried after every pull.
		for _, n := range needs {
			for _, rc := range recs {
				if rc.Collection == n.Collection && rc.ID == n.ID {
					b, err := encodeMsg(&wireMsg{T: msgBatch, Batch: &batchMsg{Records: []recordChanges{rc}}})
					if err != nil {
						return err
					}
					if err := pending.Put(ctx, names.Key(rc.Collection, rc.ID, strconv.Itoa(st.BundlesPulled)), b); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	healSeq, err := r.slotUint(ctx, nsPeer+peer, "healing")
	if err != nil {
		return err
	}
	answered := false
	n, rerr := s.v.Receive(ctx, s.client, 0, func(m relay.Message) error {
		if isResendRequest(m.Payload) {
			s.resend = true
			return nil
		}
		// A member's bundle pushed after this device's resend request
		// carries its answer: the heal is done once it is applied.
		answered = answered || (healSeq > 0 && m.Seq > healSeq)
		msg, err := decodeBatch(m.Payload)
		if err != nil {
			return err
		}
		if msg.T != msgBatch {
			return protoErr("relay bundle holds message type %d", msg.T)
		}
		st.BundlesPulled++
		for i := range msg.Batch.Records {
			// Pieces of a large change are kept per sender: two members'
			// bundles may interleave.
			msg.Batch.Records[i].from = transport.Fingerprint(m.Sender)
		}
		return apply(msg.Batch.Records)
	})
	st.BundlesPulled = n
	st.Refused = s.v.Refused()
	if rerr != nil {
		return rerr
	}
	if err := r.retryPending(ctx, peer, pending, st); err != nil {
		return err
	}
	switch {
	case answered:
		return r.store.Slots(nsPeer+peer).Delete(ctx, "healing")
	case healSeq > 0 && !s.heal:
		r.status.warn(peer, "this store went back to an older copy; waiting for the space's members to send everything again")
	}
	return nil
}

// pushRelay pushes the feed after the push cursor, in bundles. When the
// space's live grants changed since the last completed push, it starts
// from the beginning of the feed (records the space holds are skipped by
// their shared heads), so a collection granted late brings its older
// records and a revoked one stops at once.
func (r *Replica) pushRelay(ctx context.Context, s *relaySession, h *host, st *RelayStats) error {
	peer := s.peer
	pushed, err := r.slotUint(ctx, nsPeer+peer, "pushed")
	if err != nil {
		return err
	}
	grants := r.grantsDigest(peer)
	stored, _, err := r.store.Slots(nsPeer+peer).Get(ctx, "grants")
	if err != nil {
		return err
	}
	if string(stored) != grants {
		pushed = 0
	}
	// After an invitation, every record goes whole once, whatever the
	// space is known to hold: the new member holds nothing.
	_, full, err := r.store.Slots(nsPeer+peer).Get(ctx, "fullpush")
	if err != nil {
		return err
	}
	h.whole = full
	for {
		recs, upTo, err := h.nextBatch(ctx, peer, pushed, r.opts.Batch, 1<<20)
		if err != nil {
			return err
		}
		if upTo <= pushed && len(recs) == 0 {
			break
		}
		if len(recs) > 0 {
			groups, err := splitBatch(recs, frameBudget)
			if err != nil {
				return err
			}
			for _, g := range groups {
				payload, err := encodeMsg(&wireMsg{T: msgBatch, Batch: &batchMsg{Records: g, UpTo: upTo}})
				if err != nil {
					return err
				}
				if _, err := s.sender.Send(ctx, payload); err != nil {
					return fmt.Errorf("push: %w", err) // the cursor stays: these records go again
				}
				st.BundlesPushed++
				st.BytesPushed += int64(len(payload))
				for _, rc := range g {
					if !rc.Partial {
						st.RecordsPushed++
					}
				}
			}
			if err := h.acked(ctx, peer, recs); err != nil {
				return err
			}
		}
		pushed = upTo
		if _, err := r.store.Write(ctx, storage.Batch{Slots: []storage.SlotWrite{r.uintWrite(nsPeer+peer, "pushed", pushed)}}); err != nil {
			return err
		}
	}
	st.InvalidNames += h.invalidNames()
	b := storage.Batch{Slots: []storage.SlotWrite{{Namespace: nsPeer + peer, Key: "grants", Value: []byte(grants)}}}
	if full {
		b.Slots = append(b.Slots, storage.SlotWrite{Namespace: nsPeer + peer, Key: "fullpush", Delete: true})
	}
	_, err = r.store.Write(ctx, b)
	return err
}

func (r *Replica) slotUint(ctx context.Context, ns, key string) (uint64, error) {
	b, ok, err := r.store.Slots(ns).Get(ctx, key)
	if err != nil || !ok {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("replica: %s: %w", key, storage.ErrCorrupt)
	}
	return binary.BigEndian.Uint64(b), nil
}

func (r *Replica) uintWrite(ns, key string, v uint64) storage.SlotWrite {
	return storage.SlotWrite{Namespace: ns, Key: key, Value: binary.BigEndian.AppendUint64(nil, v)}
}

// retryPending applies the records parked for missing dependencies whose
// dependencies have arrived since.
func (r *Replica) retryPending(ctx context.Context, peer string, pending *storage.Slots, st *RelayStats) error {
	type parked struct {
		key string
		rc  recordChanges
	}
	var all []parked
	if err := pending.Range(ctx, func(k string, b []byte) error {
		msg, err := decodeBatch(b)
		if err != nil || msg.T != msgBatch || len(msg.Batch.Records) != 1 {
			return fmt.Errorf("replica: parked record: %w", storage.ErrCorrupt)
		}
		all = append(all, parked{k, msg.Batch.Records[0]})
		return nil
	}); err != nil {
		return err
	}
	for _, p := range all {
		if !validRecord(p.rc.Collection, p.rc.ID) {
			// Parked by a version without the naming rule: refused now.
			st.InvalidNames++
			if err := pending.Delete(ctx, p.key); err != nil {
				return err
			}
			continue
		}
		needs, conflicts, _, err := r.applyRecords(ctx, peer, []recordChanges{p.rc}, 0)
		if err != nil {
			return err
		}
		if len(needs) == 0 {
			st.RecordsApplied++
			st.Conflicts += conflicts
			if err := pending.Delete(ctx, p.key); err != nil {
				return err
			}
		}
	}
	return nil
}
