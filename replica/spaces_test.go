package replica

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
)

// colluding is a relay that cooperates with a removed device: it serves
// that device whatever it serves a current member (as), and stores what
// the device pushes as if it were still a member.
type colluding struct {
	relay.API           // the removed device's own client
	as        relay.API // a member's view, used to read
}

func (c colluding) Members(ctx context.Context, s relay.Space) (relay.SignedMembers, error) {
	return c.as.Members(ctx, s)
}
func (c colluding) Status(ctx context.Context, s relay.Space) (relay.SpaceStatus, error) {
	return c.as.Status(ctx, s)
}
func (c colluding) Epochs(ctx context.Context, s relay.Space) ([][]byte, error) {
	return c.as.Epochs(ctx, s)
}
func (c colluding) PullPage(ctx context.Context, s relay.Space, after uint64, wait time.Duration) (relay.Page, error) {
	return c.as.PullPage(ctx, s, after, wait)
}
func (c colluding) Ack(context.Context, relay.Space, uint64) error { return nil }

// allBundles is every bundle the relay holds for the space, as a member
// reads them.
func allBundles(t *testing.T, api relay.API, space relay.Space) []relay.Envelope {
	t.Helper()
	p, err := api.PullPage(context.Background(), space, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p.Envelopes
}

func memberChanges(t *testing.T, r *Replica, spaceID string) []string {
	t.Helper()
	ms, err := r.Consent().Memberships(context.Background(), spacePeer(spaceID))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		who := "other"
		if m.Member == r.ID() {
			who = "self"
		}
		out = append(out, fmt.Sprintf("%s %s e%d", m.Change, who, m.Epoch))
	}
	return out
}

// TestSpaceRemoveRotatesKey: a removes c (another person's device) from a
// three-member space. The key rotates: b, which remains, reads what a
// writes afterwards; c, even served everything by a relay that cooperates
// with it, opens nothing sealed after the removal and learns cleanly that
// it was removed. The consent ledger records every membership change.
func TestSpaceRemoveRotatesKey(t *testing.T) {
	e := newEnv(t)
	e.relay.Now = e.clock.Now
	a, b := e.replica("a"), e.replica("b")
	var cAPI relay.API // c's view of the relay: honest until the removal
	c := e.replica("c", func(o *Options) {
		o.Relay = func(_ string, id ed25519.PrivateKey) relay.API {
			if cAPI != nil {
				return cAPI
			}
			return e.relay.Client(id)
		}
	})
	ctx := context.Background()
	spaceID := joinAll(t, memRelayURL, "notes", a, b, c)
	mustPut(t, a, "notes", "before", map[string]any{"t": "everyone reads this"})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	relaySync(t, c, spaceID)
	if got := mustGet(t, c, "notes", "before")["t"]; got != "everyone reads this" {
		t.Fatalf("c before the removal: %v", got)
	}

	ch, err := a.RemoveMember(ctx, spaceID, c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if ch.Epoch != 1 || ch.Member != c.ID() {
		t.Fatalf("change %+v", ch)
	}
	if _, err := a.RemoveMember(ctx, spaceID, c.ID()); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("removing c again: %v, want ErrUnknownMember", err)
	}
	if _, err := a.RemoveMember(ctx, spaceID, a.ID()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("removing oneself: %v, want ErrInvalid", err)
	}
	mustPut(t, a, "notes", "after", map[string]any{"t": "zq-secret-after-removal"})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	if got := mustGet(t, b, "notes", "after")["t"]; got != "zq-secret-after-removal" {
		t.Fatalf("b after the rotation: %v", got)
	}
	mustPut(t, b, "notes", "from-b", map[string]any{"t": "b after the rotation"})
	relaySync(t, b, spaceID)
	relaySync(t, a, spaceID)
	if got := mustGet(t, a, "notes", "from-b")["t"]; got != "b after the rotation" {
		t.Fatalf("a reads b after the rotation: %v", got)
	}

	// The relay cooperates with c: it serves it what it serves b.
	cSpace, _, err := c.Space(ctx, spaceID)
	if err != nil {
		t.Fatal(err)
	}
	bView := e.relay.Client(b.Identity())
	cAPI = colluding{API: e.relay.Client(c.Identity()), as: bView}
	envs := allBundles(t, bView, cSpace)
	if len(envs) == 0 {
		t.Fatal("the relay holds nothing to hand c")
	}
	for _, env := range envs {
		if ep, _ := relay.BundleEpoch(env.Data); ep == 0 {
			continue // sealed before the removal
		}
		if _, err := relay.Open(cSpace, env.Data); !errors.Is(err, relay.ErrNoKey) {
			t.Fatalf("c opened bundle %d sealed after its removal: %v", env.Seq, err)
		}
	}
	recs, err := bView.Epochs(ctx, cSpace)
	if err != nil || len(recs) != 1 {
		t.Fatalf("epochs: %d %v", len(recs), err)
	}
	if er, err := relay.OpenEpochRecord(cSpace, recs[0], c.Identity()); !errors.Is(err, relay.ErrNoKey) || er.HasKey {
		t.Fatalf("c opened the new key: %v", err)
	}
	_, err = c.SyncRelay(ctx, spaceID)
	if !errors.Is(err, ErrSpaceRemoved) {
		t.Fatalf("c syncing through a colluding relay: %v, want ErrSpaceRemoved", err)
	}
	if _, err := c.Get(ctx, "notes", "after"); err == nil {
		t.Fatal("c holds a record written after its removal")
	}
	if got := mustGet(t, c, "notes", "before")["t"]; got != "everyone reads this" {
		t.Fatalf("c lost what it held: %v", got)
	}

	// The ledger of each device records the changes it made or saw.
	wantA := []string{"created self e0", "added other e0", "added other e0", "removed other e1"}
	if got := memberChanges(t, a, spaceID); !slices.Equal(got, wantA) {
		t.Fatalf("a's ledger: %q, want %q", got, wantA)
	}
	if got := memberChanges(t, c, spaceID); !slices.Equal(got, []string{"joined self e0", "left self e0"}) {
		t.Fatalf("c's ledger: %q", got)
	}
}

// TestSpaceRemovedOfflineLearnsCleanly: a device removed while it was
// offline gets ErrSpaceRemoved (a refusal, exit code 7) when it comes
// back, keeps what it holds, and gets the same error from then on
// without the relay; SpaceStatus says so.
func TestSpaceRemovedOfflineLearnsCleanly(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	spaceID := joinAll(t, memRelayURL, "notes", a, b)
	mustPut(t, b, "notes", "mine", map[string]any{"t": "b's own"})
	relaySync(t, b, spaceID)
	relaySync(t, a, spaceID)
	if _, err := a.RemoveMember(ctx, spaceID, b.ID()); err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, "notes", "offline", map[string]any{"t": "written while removed"})
	_, err := b.SyncRelay(ctx, spaceID)
	if !errors.Is(err, ErrSpaceRemoved) {
		t.Fatalf("b comes back: %v, want ErrSpaceRemoved", err)
	}
	e.relay.Fail = func(string) error { return errors.New("the relay must not be asked again") }
	if _, err := b.SyncRelay(ctx, spaceID); !errors.Is(err, ErrSpaceRemoved) {
		t.Fatalf("b again: %v", err)
	}
	info, err := b.SpaceStatus(ctx, spaceID)
	if err != nil || info.Removed == "" {
		t.Fatalf("b's space status: %+v %v", info, err)
	}
	e.relay.Fail = nil
	for _, id := range []string{"mine", "offline"} {
		if _, err := b.Get(ctx, "notes", id); err != nil {
			t.Fatalf("b lost %s: %v", id, err)
		}
	}
	if _, err := a.Get(ctx, "notes", "offline"); err == nil {
		t.Fatal("a received what b wrote after its removal")
	}
}

// TestSpaceExpiryDropsDeadMember: a member that never acknowledges holds
// every bundle at the relay; once it has been silent longer than the
// space's policy, the next sync of a live member drops it (rotating the
// key), says so, and the relay compacts again.
func TestSpaceExpiryDropsDeadMember(t *testing.T) {
	e := newEnv(t)
	e.relay.Now = e.clock.Now
	a, b, dead := e.replica("a"), e.replica("b"), e.replica("dead")
	ctx := context.Background()
	spaceID := joinAll(t, memRelayURL, "notes", a, b, dead)
	if err := a.SetSpaceExpiry(ctx, spaceID, 30*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := a.SetSpaceExpiry(ctx, spaceID, time.Minute); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a one-minute expiry: %v", err)
	}
	space, _, _ := a.Space(ctx, spaceID)
	held := func() int64 {
		st, err := e.relay.Client(a.Identity()).Status(ctx, space)
		if err != nil {
			t.Fatal(err)
		}
		return st.Bundles
	}
	for i := range 5 {
		mustPut(t, a, "notes", fmt.Sprint("n", i), map[string]any{"i": int64(i)})
		relaySync(t, a, spaceID)
		relaySync(t, b, spaceID)
		e.clock.Advance(24 * time.Hour)
	}
	if n := held(); n != 5 {
		t.Fatalf("the relay holds %d bundles with a dead member, want all 5", n)
	}
	info, err := a.SpaceStatus(ctx, spaceID)
	if err != nil || len(info.Members) != 3 {
		t.Fatalf("status: %+v %v", info, err)
	}
	for _, m := range info.Members {
		if m.Fingerprint == dead.ID() && m.DropAt.IsZero() {
			t.Fatalf("the dead member shows no drop time: %+v", m)
		}
	}

	e.clock.Advance(26 * 24 * time.Hour) // 31 days since it was added
	relaySync(t, b, spaceID)             // b is alive
	st := relaySync(t, a, spaceID)
	if !slices.Equal(st.Dropped, []string{dead.ID()}) {
		t.Fatalf("dropped %v, want the dead member", st.Dropped)
	}
	if n := held(); n != 0 {
		t.Fatalf("after the drop the relay holds %d bundles, want 0", n)
	}
	_, ps := a.Status(ctx)
	if i := slices.IndexFunc(ps, func(s Status) bool { return s.Peer == spacePeer(spaceID) }); i < 0 || ps[i].Warning == "" {
		t.Fatalf("a's status does not say it dropped a member: %+v", ps)
	}
	if got := memberChanges(t, a, spaceID); got[len(got)-1] != "expired other e1" {
		t.Fatalf("a's ledger ends %q", got)
	}
	// Compaction goes on: new bundles are dropped once b acknowledges.
	mustPut(t, a, "notes", "later", map[string]any{"i": int64(9)})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	relaySync(t, a, spaceID)
	if n := held(); n != 0 {
		t.Fatalf("the relay holds %d bundles after both acknowledged", n)
	}
	if _, err := dead.SyncRelay(ctx, spaceID); !errors.Is(err, ErrSpaceRemoved) {
		t.Fatalf("the dead member comes back: %v", err)
	}
}

// TestSpaceLateGrantAndRevoke: a collection granted to a space after
// earlier syncs brings its older records at the next push; a revocation
// stops them at the next push.
func TestSpaceLateGrantAndRevoke(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	mustPut(t, a, "tasks", "t1", map[string]any{"t": "older task"})
	spaceID := joinAll(t, memRelayURL, "notes", a, b)
	mustPut(t, a, "notes", "n1", map[string]any{"t": "note"})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	if _, err := b.Get(ctx, "tasks", "t1"); err == nil {
		t.Fatal("tasks travelled without a grant")
	}
	g, err := a.Consent().Grant(ctx, consent.Grant{Collection: "tasks", Purpose: consent.PurposeDeviceSync, Destination: spacePeer(spaceID)})
	if err != nil {
		t.Fatal(err)
	}
	st := relaySync(t, a, spaceID)
	if st.RecordsPushed != 1 {
		t.Fatalf("after the late grant a pushed %d records, want t1", st.RecordsPushed)
	}
	relaySync(t, b, spaceID)
	if got := mustGet(t, b, "tasks", "t1")["t"]; got != "older task" {
		t.Fatalf("b has %v", got)
	}
	// Nothing moves twice.
	if st := relaySync(t, a, spaceID); st.RecordsPushed != 0 {
		t.Fatalf("a idle push: %d records", st.RecordsPushed)
	}
	if err := a.Consent().Revoke(ctx, g.ID, "test"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, a, "tasks", "t2", map[string]any{"t": "after the revoke"})
	mustPut(t, a, "tasks", "t1", map[string]any{"t": "edited after the revoke"})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	if _, err := b.Get(ctx, "tasks", "t2"); err == nil {
		t.Fatal("a record of a revoked collection travelled")
	}
	if got := mustGet(t, b, "tasks", "t1")["t"]; got != "older task" {
		t.Fatalf("an edit in a revoked collection travelled: %v", got)
	}
}

// TestSpaceUntrust: revoking a space takes the same call as revoking a
// peer; a space without grants is not synced any more.
func TestSpaceUntrust(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	spaceID := joinAll(t, memRelayURL, "notes", a, b)
	if _, err := a.Unpair(ctx, "space:short"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad space id: %v", err)
	}
	n, err := a.Unpair(ctx, "space:"+spaceID)
	if err != nil || n != 1 {
		t.Fatalf("untrust space: %d %v", n, err)
	}
	mustPut(t, a, "notes", "n1", map[string]any{"t": "x"})
	if _, err := a.SyncRelay(ctx, spaceID); !errors.Is(err, ErrNoConsent) {
		t.Fatalf("sync after untrust: %v, want ErrNoConsent", err)
	}
	if n, err := a.Unpair(ctx, b.ID()); err != nil || n == 0 {
		t.Fatalf("untrust peer: %d %v", n, err)
	}
}

// TestSpaceHealsRestoredStore: a device whose store is restored from an
// older copy (after the relay compacted what it had acknowledged) says so
// at its next sync; the other member sends everything again at its next
// sync, and the restored device gets back every record, its own included,
// with no user action.
func TestSpaceHealsRestoredStore(t *testing.T) {
	e := newEnv(t)
	a := e.replica("a")
	bDir := filepath.Join(t.TempDir(), "b")
	openB := func() *Replica {
		o := diskOptions("b")
		o.Now, o.Relay, o.Policies = e.clock.Now, e.memRelay, a.opts.Policies
		r, err := Open(context.Background(), bDir, o)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	b := openB()
	ctx := context.Background()
	spaceID := joinAll(t, memRelayURL, "notes", a, b)
	mustPut(t, a, "notes", "a1", map[string]any{"t": "a1"})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	b.Close()
	snap := filepath.Join(t.TempDir(), "b.snap")
	copyTree(t, bDir, snap) // cp -a B B.snap
	b = openB()
	for i := range 3 {
		mustPut(t, a, "notes", fmt.Sprint("a-late", i), map[string]any{"i": int64(i)})
	}
	mustPut(t, b, "notes", "b-own", map[string]any{"t": "written by b, then lost by b"})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID) // everything acknowledged: the relay compacts it
	b.Close()
	if err := os.RemoveAll(bDir); err != nil { // rm -rf B; cp -a B.snap B
		t.Fatal(err)
	}
	copyTree(t, snap, bDir)
	b = openB()
	t.Cleanup(func() { b.Close() })
	if _, err := b.Get(ctx, "notes", "b-own"); err == nil {
		t.Fatal("the restored copy holds b-own: the test restores nothing")
	}
	st := relaySync(t, b, spaceID)
	if !st.Healed {
		t.Fatalf("b did not notice its store went back: %+v", st)
	}
	relaySync(t, b, spaceID) // nothing answered yet: still healing
	_, ps := b.Status(ctx)
	if i := slices.IndexFunc(ps, func(s Status) bool { return s.Peer == spacePeer(spaceID) }); i < 0 || ps[i].State != Stale {
		t.Fatalf("b's status while healing: %+v", ps)
	}
	relaySync(t, a, spaceID) // answers the resend request
	relaySync(t, b, spaceID)
	want := dump(t, a, "notes")
	if got := dump(t, b, "notes"); len(got) != len(want) || len(want) != 5 {
		t.Fatalf("b holds %d records, a %d, want 5 each", len(got), len(want))
	}
	if got := mustGet(t, b, "notes", "b-own")["t"]; got != "written by b, then lost by b" {
		t.Fatalf("b-own: %v", got)
	}
	// Healed: the next round moves nothing and says nothing more.
	if st := relaySync(t, b, spaceID); st.Healed || st.RecordsApplied != 0 {
		t.Fatalf("after healing: %+v", st)
	}
	_, ps = b.Status(ctx)
	if i := slices.IndexFunc(ps, func(s Status) bool { return s.Peer == spacePeer(spaceID) }); i < 0 || ps[i].Warning != "" || ps[i].State != UpToDate {
		t.Fatalf("b's status after healing: %+v", ps)
	}
	mustPut(t, b, "notes", "b-new", map[string]any{"t": "after"})
	relaySync(t, b, spaceID)
	relaySync(t, a, spaceID)
	if got := mustGet(t, a, "notes", "b-new")["t"]; got != "after" {
		t.Fatalf("a reads b's next write: %v", got)
	}
}

// TestSpaceReinvite: a removed device invited back joins again and the
// others accept its new writes (its removal is forgotten once a member
// lists it again).
func TestSpaceReinvite(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	spaceID := joinAll(t, memRelayURL, "notes", a, b)
	mustPut(t, b, "notes", "b1", map[string]any{"t": "1"})
	relaySync(t, b, spaceID)
	relaySync(t, a, spaceID)
	if _, err := a.RemoveMember(ctx, spaceID, b.ID()); err != nil {
		t.Fatal(err)
	}
	relaySync(t, a, spaceID)
	if _, err := b.SyncRelay(ctx, spaceID); !errors.Is(err, ErrSpaceRemoved) {
		t.Fatalf("b removed: %v", err)
	}
	code, err := b.JoinCode()
	if err != nil {
		t.Fatal(err)
	}
	inv, err := a.Invite(ctx, spaceID, code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JoinSpace(ctx, inv, []string{"notes"}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, "notes", "b2", map[string]any{"t": "back"})
	mustPut(t, a, "notes", "a2", map[string]any{"t": "after the rotation"})
	relaySync(t, a, spaceID)
	relaySync(t, b, spaceID)
	st := relaySync(t, a, spaceID)
	if got := mustGet(t, a, "notes", "b2")["t"]; got != "back" {
		t.Fatalf("a reads b again: %v (%+v)", got, st)
	}
	if got := mustGet(t, b, "notes", "a2")["t"]; got != "after the rotation" {
		t.Fatalf("b reads the new epoch: %v", got)
	}
}
