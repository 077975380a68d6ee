package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// diskReplica opens (or creates) an on-disk replica in dir.
func diskReplica(t *testing.T, e *testEnv, name, dir string) *Replica {
	t.Helper()
	opts := Options{Passphrase: []byte("pw-" + name), KDF: storage.TestKDF(), Name: name, Now: e.clock.Now,
		Policies: policy.NewSet(policy.Rule{Policy: policy.Timestamp})}
	r, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// copyTree copies a closed store directory (flat, as Badger keeps it).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if en.IsDir() || en.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, en.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func peerStatus(t *testing.T, r *Replica, peer string) Status {
	t.Helper()
	_, peers := r.Status(context.Background())
	for _, p := range peers {
		if p.Peer == peer {
			return p
		}
	}
	t.Fatalf("%s has no status for %s", r.Name(), peer)
	return Status{}
}

// TestStatusPeerStoreReplaced: once a peer's store is restored from an
// older copy of itself, neither side's status says up-to-date until a
// session heals the stores; each says which store went back. The healing
// session (it reconciles, see docs/sync.md) gives the restored store back
// what it lost and clears the mark. Peers whose stores did not go back
// stay up-to-date however often they sync.
func TestStatusPeerStoreReplaced(t *testing.T) {
	e := newEnv(t)
	root := t.TempDir()
	aDir, bDir, snap := filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "b.snap")
	a, b := diskReplica(t, e, "a", aDir), diskReplica(t, e, "b", bDir)
	pairAll(t, []*Replica{a, b}, "notes")
	for i := range 5 {
		mustPut(t, a, "notes", fmt.Sprintf("r%d", i), map[string]any{"v": i})
		mustPut(t, b, "notes", fmt.Sprintf("b%d", i), map[string]any{"v": i})
	}
	for range 3 {
		sa, sb := e.sync(a, b)
		sameCounts(t, "before", sa, sb)
		if s := peerStatus(t, a, b.ID()); s.State != UpToDate || s.Warning != "" {
			t.Fatalf("a's status for b before any replacement: %+v", s)
		}
		if s := peerStatus(t, b, a.ID()); s.State != UpToDate || s.Warning != "" {
			t.Fatalf("b's status for a before any replacement: %+v", s)
		}
	}
	bID := b.ID()
	b.Close()
	copyTree(t, bDir, snap) // cp -a B B.snap
	b = diskReplica(t, e, "b", bDir)
	for i := 5; i < 10; i++ {
		mustPut(t, a, "notes", fmt.Sprintf("r%d", i), map[string]any{"v": i})
	}
	e.sync(a, b)
	b.Close()
	if err := os.RemoveAll(bDir); err != nil { // rm -rf B; cp -a B.snap B
		t.Fatal(err)
	}
	copyTree(t, snap, bDir)
	b = diskReplica(t, e, "b", bDir)
	if b.ID() != bID {
		t.Fatal("the restored copy has another identity")
	}

	// A session cut after the hellos: the stores are not healed yet.
	cut := func(c transport.Conn) transport.Conn { return &cutAfterConn{Conn: c, left: 1} }
	errA, errB := reviewSync(e, a, b, time.Minute, cut, cut)
	t.Logf("session after the restore (cut): A %v, B %v", errA, errB)
	sa := peerStatus(t, a, b.ID())
	if sa.State == UpToDate || sa.State == Conflict || !strings.Contains(sa.Warning, "peer's store was replaced") {
		t.Fatalf("a's status for b after b's store went back: %+v", sa)
	}
	sb := peerStatus(t, b, a.ID())
	if sb.State == UpToDate || sb.State == Conflict || !strings.Contains(sb.Warning, "this store was replaced") {
		t.Fatalf("b's status for a after its own store went back: %+v", sb)
	}
	if all, _ := a.Status(context.Background()); all.State == UpToDate {
		t.Fatalf("a's overall status: %+v", all)
	}
	// The mark survives a restart.
	a.Close()
	a = diskReplica(t, e, "a", aDir)
	if s := peerStatus(t, a, b.ID()); s.State == UpToDate || s.Warning == "" {
		t.Fatalf("a's status for b after a restart: %+v", s)
	}
	// A completed session heals both: b holds a's records again, and
	// neither side is stale.
	e.sync(a, b)
	for i := range 10 {
		if _, err := b.Get(context.Background(), "notes", fmt.Sprintf("r%d", i)); err != nil {
			t.Fatalf("b lacks r%d after healing: %v", i, err)
		}
	}
	if s := peerStatus(t, a, b.ID()); s.State != UpToDate || s.Warning != "" {
		t.Fatalf("a's status for b after healing: %+v", s)
	}
	if s := peerStatus(t, b, a.ID()); s.State != UpToDate || s.Warning != "" {
		t.Fatalf("b's status for a after healing: %+v", s)
	}
}

// cutAfterConn sends left frames, then cuts the connection.
type cutAfterConn struct {
	transport.Conn
	left int
}

func (c *cutAfterConn) Send(ctx context.Context, b []byte) error {
	if c.left <= 0 {
		c.Conn.Close()
		return transport.ErrCut
	}
	c.left--
	return c.Conn.Send(ctx, b)
}

// TestSyncRefusedGrantExpired: a session refused because the peer's grant
// expired says so, with the time and the command that renews it, on the
// refusing side and (through the protocol's error message) on the other;
// a revoked grant is not reported as expired.
func TestSyncRefusedGrantExpired(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	ctx := context.Background()
	if _, err := a.Unpair(ctx, b.ID()); err != nil {
		t.Fatal(err)
	}
	gs, err := a.Pair(ctx, b.ID(), []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.ExpiredGrant(ctx, b.ID()); ok {
		t.Fatal("a live grant reported as expired")
	}
	e.clock.Advance(2 * time.Hour)
	g, ok := a.ExpiredGrant(ctx, b.ID())
	if !ok || g.ID != gs[0].ID {
		t.Fatalf("expired grant: %+v %v", g, ok)
	}
	want := "grant for " + b.ID() + " expired at " + gs[0].Expires.UTC().Format(time.RFC3339) + "; renew it with ferry trust " + b.ID()
	_, _, errA, errB := e.trySync(a, b)
	for side, err := range map[string]error{"refusing side": errA, "other side": errB} {
		if !errors.Is(err, ErrNoConsent) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v; want ErrNoConsent saying %q", side, err, want)
		}
	}
}
