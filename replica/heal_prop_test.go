package replica

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/internal/valuegen"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"pgregory.net/rapid"
)

// The healing property (issue 13): replicas whose stores are restored from
// earlier copies of themselves, syncing in random pairs over a network that
// cuts sessions, end up holding every record, identical, and then sync
// nothing more.

// healEnv is a rapid-driven group of on-disk replicas on one in-memory
// network; each replica's store directory can be copied while closed
// (a snapshot) and later replaced by such a copy (a restore).
type healEnv struct {
	rt       *rapid.T
	root     string
	clock    *fakeClock
	net      *transport.MemNetwork
	opts     []Options
	dirs     []string
	replicas []*Replica
	snaps    [][]string // per replica: its snapshot directories, oldest first
	fresh    int        // fresh record ids handed out
	restore  int        // restores done
	log      []string
}

// healPool is the ids of the records every replica edits.
var healPool = []string{"x0", "x1", "x2", "x3", "x4", "x5"}

const healColl = "items"

func newHealEnv(rt *rapid.T) *healEnv {
	rt.Helper()
	root, err := os.MkdirTemp("", "ferry-heal-prop-")
	if err != nil {
		rt.Fatal(err)
	}
	seed := rapid.Int64().Draw(rt, "netseed")
	e := &healEnv{rt: rt, root: root, clock: newFakeClock(), net: transport.NewMemNetwork(seed, func(string) {})}
	kind := rapid.SampledFrom([]policy.Kind{policy.Timestamp, policy.Merge}).Draw(rt, "policy")
	set := policy.NewSet(policy.Rule{Policy: kind})
	n := rapid.IntRange(3, 5).Draw(rt, "replicas")
	batch := rapid.SampledFrom([]int{1, 2, 512}).Draw(rt, "batch")
	for i := range n {
		o := Options{
			Passphrase: []byte("pw"), KDF: storage.TestKDF(), NoSync: true,
			Name: fmt.Sprintf("r%d", i), Now: e.clock.Now, Policies: set, Batch: batch,
		}
		dir := filepath.Join(root, o.Name)
		r, err := Open(context.Background(), dir, o)
		if err != nil {
			rt.Fatal(err)
		}
		e.opts, e.dirs, e.replicas = append(e.opts, o), append(e.dirs, dir), append(e.replicas, r)
		e.snaps = append(e.snaps, nil)
	}
	pairAll(rt, e.replicas, healColl)
	return e
}

func (e *healEnv) close() {
	for _, r := range e.replicas {
		if r != nil {
			r.Close()
		}
	}
	e.net.Close()
	os.RemoveAll(e.root)
}

func (e *healEnv) logf(format string, args ...any) {
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

func (e *healEnv) fatalf(format string, args ...any) {
	e.rt.Helper()
	e.rt.Fatalf("%s\nsteps:\n  %s", fmt.Sprintf(format, args...), strings.Join(e.log, "\n  "))
}

func (e *healEnv) reopen(i int) {
	r, err := Open(context.Background(), e.dirs[i], e.opts[i])
	if err != nil {
		e.fatalf("reopen r%d: %v", i, err)
	}
	e.replicas[i] = r
}

// snapshot copies replica i's store directory while it is closed, as a
// user's file-level backup (cp -a) would.
func (e *healEnv) snapshot(i int) {
	if err := e.replicas[i].Close(); err != nil {
		e.fatalf("close r%d: %v", i, err)
	}
	e.replicas[i] = nil
	dst := filepath.Join(e.root, fmt.Sprintf("r%d.snap%d", i, len(e.snaps[i])))
	if err := copyStoreDir(e.dirs[i], dst); err != nil {
		e.fatalf("snapshot r%d: %v", i, err)
	}
	e.snaps[i] = append(e.snaps[i], dst)
	e.logf("snapshot r%d -> %s", i, filepath.Base(dst))
	e.reopen(i)
}

// restoreFrom replaces replica i's store directory by one of its
// snapshots (rm -rf B; cp -a B.snap B) and reopens it.
func (e *healEnv) restoreFrom(i, snap int) {
	if err := e.replicas[i].Close(); err != nil {
		e.fatalf("close r%d: %v", i, err)
	}
	e.replicas[i] = nil
	if err := os.RemoveAll(e.dirs[i]); err != nil {
		e.fatalf("remove r%d: %v", i, err)
	}
	if err := copyStoreDir(e.snaps[i][snap], e.dirs[i]); err != nil {
		e.fatalf("restore r%d: %v", i, err)
	}
	e.restore++
	e.logf("restore r%d <- %s", i, filepath.Base(e.snaps[i][snap]))
	e.reopen(i)
}

// copyStoreDir copies the regular files of src (recursively) into dst.
func copyStoreDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
}

// session runs one sync between replicas i (dialing) and j, cut after
// cutAfter frames when cutAfter > 0 (then it may fail; with cutAfter < 0
// it is not cut but may fail too). It returns both
// sides' stats and whether both ended without error.
func (e *healEnv) session(i, j, cutAfter int) (SyncStats, SyncStats, bool) {
	a, b := e.replicas[i], e.replicas[j]
	if cutAfter > 0 {
		if err := e.net.Script(transport.Plan{From: a.ID(), To: b.ID(), CutAfter: cutAfter}); err != nil {
			e.rt.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := e.net.Listen(b.ID(), pub(b))
	if err != nil {
		e.rt.Fatal(err)
	}
	defer l.Close()
	var sb SyncStats
	errB := make(chan error, 1)
	go func() {
		conn, err := l.Accept(ctx)
		if err != nil {
			errB <- err
			return
		}
		defer conn.Close()
		var err2 error
		sb, err2 = b.Sync(ctx, conn)
		errB <- err2
	}()
	var sa SyncStats
	conn, errA := e.net.Dialer(a.ID(), pub(a)).Dial(ctx, b.ID())
	if errA == nil {
		sa, errA = a.Sync(ctx, conn)
		conn.Close()
	} else {
		cancel()
	}
	eb := <-errB
	e.logf("session r%d->r%d cut=%d: sent %d/%d received %d/%d err %v / %v", i, j, cutAfter,
		sa.RecordsSent, sb.RecordsSent, sa.RecordsReceived, sb.RecordsReceived, errA, eb)
	if cutAfter == 0 && (errA != nil || eb != nil) {
		e.fatalf("fault-free session r%d<->r%d failed: %v / %v", i, j, errA, eb)
	}
	return sa, sb, errA == nil && eb == nil
}

// edit writes to replica i: a put of generated fields (awkward keys and
// values from valuegen), or a delete, on a shared record; or a new record
// under a fresh id. A restored replica edits shared records at once too:
// each opening of a store writes as its own Automerge actor
// (crdt.Actor.Session), so no edit reuses the (actor, seq) of a lost one.
func (e *healEnv) edit(i int) {
	rt, r, ctx := e.rt, e.replicas[i], context.Background()
	if rapid.IntRange(0, 5).Draw(rt, "freshRecord") == 0 {
		e.fresh++
		id := fmt.Sprintf("f%d", e.fresh)
		fields := valuegen.Map(1).Draw(rt, "freshFields")
		fields["n"] = int64(e.fresh)
		if err := r.Put(ctx, healColl, id, fields); err != nil {
			e.fatalf("put %s on r%d: %v", id, i, err)
		}
		e.logf("r%d put %s", i, id)
		return
	}
	id := rapid.SampledFrom(healPool).Draw(rt, "record")
	if rapid.IntRange(0, 5).Draw(rt, "delete") == 0 {
		err := r.Delete(ctx, healColl, id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			e.fatalf("delete %s on r%d: %v", id, i, err)
		}
		e.logf("r%d delete %s: %v", i, id, err)
		return
	}
	fields := valuegen.Map(1).Draw(rt, "fields")
	fields[fmt.Sprintf("by-r%d", i)] = rapid.Int64().Draw(rt, "mark") // never an empty put
	err := r.Put(ctx, healColl, id, fields)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, crdt.ErrBadPath) {
		e.fatalf("put %s on r%d: %v", id, i, err)
	}
	e.logf("r%d put %s: %v", i, id, err)
}

// healRecord is one record as every replica must hold it.
type healRecord struct {
	Deleted bool
	Heads   string
	Value   map[string]any
}

// holdings returns every record of replica i (tombstones included) with
// its heads and, if live, its value.
func (e *healEnv) holdings(i int) map[string]healRecord {
	ctx, r := context.Background(), e.replicas[i]
	page, err := r.List(ctx, healColl, ListOptions{Deleted: true})
	if err != nil {
		e.fatalf("list r%d: %v", i, err)
	}
	if page.Next != "" {
		e.fatalf("list r%d: more than one page", i)
	}
	out := map[string]healRecord{}
	for _, it := range page.Items {
		d, ok, err := r.loadDoc(ctx, healColl, it.ID)
		if err != nil || !ok {
			e.fatalf("load %s on r%d: %v (found %v)", it.ID, i, err, ok)
		}
		hs := []string{}
		for _, h := range d.Heads() {
			hs = append(hs, h.String())
		}
		sort.Strings(hs)
		rec := healRecord{Deleted: it.Deleted, Heads: fmt.Sprint(hs)}
		if !it.Deleted {
			if rec.Value, err = r.Get(ctx, healColl, it.ID); err != nil {
				e.fatalf("get %s on r%d: %v", it.ID, i, err)
			}
		}
		out[it.ID] = rec
	}
	return out
}

func (e *healEnv) compare() {
	n := len(e.replicas)
	want := e.holdings(0)
	for i := 1; i < n; i++ {
		got := e.holdings(i)
		for id, w := range want {
			g, ok := got[id]
			switch {
			case !ok:
				e.fatalf("r%d lacks %s, which r0 holds (heads %s)", i, id, w.Heads)
			case g.Heads != w.Heads || g.Deleted != w.Deleted:
				e.fatalf("%s: r%d has heads %s deleted=%v, r0 %s deleted=%v", id, i, g.Heads, g.Deleted, w.Heads, w.Deleted)
			case !w.Deleted && !valuegen.Same(g.Value, w.Value):
				e.fatalf("%s: r%d reads %#v, r0 %#v", id, i, g.Value, w.Value)
			}
		}
		for id := range got {
			if _, ok := want[id]; !ok {
				e.fatalf("r0 lacks %s, which r%d holds", id, i)
			}
		}
	}
}

// healChecks is the number of rapid cases of TestPropertyHealRestoredStores:
// -rapid.checks when given on the command line, else FERRY_HEAL_CHECKS,
// else 5 (a few seconds), 2 under -short.
func healChecks(t *testing.T) int {
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "rapid.checks" })
	if explicit {
		n, _ := strconv.Atoi(flag.Lookup("rapid.checks").Value.String())
		return n
	}
	if s := os.Getenv("FERRY_HEAL_CHECKS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("FERRY_HEAL_CHECKS=%q: want a positive integer", s)
		}
		return n
	}
	if testing.Short() {
		return 2 * 5 // rapid divides by 5 under -short
	}
	return 5
}

// withRapidChecks runs fn with rapid's check count set to n.
func withRapidChecks(t *testing.T, n int, fn func()) {
	f := flag.Lookup("rapid.checks")
	if f == nil {
		t.Fatal("rapid registers no -rapid.checks flag")
	}
	old := f.Value.String()
	if err := f.Value.Set(strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
	defer f.Value.Set(old)
	fn()
}

// TestPropertyHealRestoredStores (issue 13): 3-5 on-disk replicas make
// random edits and sync in random pairs over an in-memory network that
// cuts sessions at random frames; now and then a replica's store is
// copied while closed, and later replaced by one of its earlier copies.
// After two fault-free rounds (a star through r0, twice) every replica
// holds every record with the same heads and the same value, and a
// further round moves no record in either direction.
//
// The case count is small by default (see healChecks); run more with
// FERRY_HEAL_CHECKS=200 or -rapid.checks=200.
func TestPropertyHealRestoredStores(t *testing.T) {
	checks := healChecks(t)
	withRapidChecks(t, checks, func() {
		rapid.Check(t, checkHeal)
	})
}

func checkHeal(rt *rapid.T) {
	e := newHealEnv(rt)
	defer e.close()
	n := len(e.replicas)
	steps := rapid.IntRange(4, 30).Draw(rt, "steps")
	for range steps {
		who := rapid.IntRange(0, n-1).Draw(rt, "who")
		switch rapid.IntRange(0, 9).Draw(rt, "action") {
		case 0, 1, 2:
			e.edit(who)
		case 3, 4, 5:
			j := (who + 1 + rapid.IntRange(0, n-2).Draw(rt, "to")) % n
			cut := 0
			if rapid.IntRange(0, 2).Draw(rt, "fault") == 0 {
				cut = rapid.IntRange(1, 12).Draw(rt, "cutAfter")
			}
			e.session(who, j, cut)
		case 6:
			e.snapshot(who)
		case 7, 8:
			if len(e.snaps[who]) > 0 {
				e.restoreFrom(who, rapid.IntRange(0, len(e.snaps[who])-1).Draw(rt, "snap"))
			}
		case 9:
			e.clock.Advance(time.Duration(rapid.IntRange(0, 5000).Draw(rt, "ms")) * time.Millisecond)
		}
	}
	// Fault-free: a star through r0, twice.
	for range 2 {
		for j := 1; j < n; j++ {
			e.session(0, j, 0)
		}
	}
	e.compare()
	for j := 1; j < n; j++ {
		sa, sb, _ := e.session(0, j, 0)
		if moved := sa.RecordsSent + sa.RecordsReceived + sb.RecordsSent + sb.RecordsReceived; moved != 0 {
			e.fatalf("quiescent round: r0<->r%d moved records (r0 sent %d received %d; r%d sent %d received %d)",
				j, sa.RecordsSent, sa.RecordsReceived, j, sb.RecordsSent, sb.RecordsReceived)
		}
	}
	e.compare()
}

// TestHealRestoredStoreExample is the restored-store case of issue 13 as
// one fixed scenario: b's store is copied, b learns more from a, b's store
// is replaced by the copy; one session with a gives b back everything, and
// the next moves nothing.
func TestHealRestoredStoreExample(t *testing.T) {
	withRapidChecks(t, 1, func() {
		rapid.Check(t, func(rt *rapid.T) {
			e := newHealEnv(rt)
			defer e.close()
			ctx := context.Background()
			a := e.replicas[0]
			for k := range 20 {
				mustPut(t, a, healColl, fmt.Sprintf("old%d", k), map[string]any{"k": int64(k)})
			}
			e.session(0, 1, 0)
			e.snapshot(1)
			for k := range 20 {
				mustPut(t, a, healColl, fmt.Sprintf("new%d", k), map[string]any{"k": int64(k)})
			}
			mustPut(t, a, healColl, "old3", map[string]any{"edited": true})
			e.session(0, 1, 0)
			e.restoreFrom(1, 0)
			if _, err := e.replicas[1].Get(ctx, healColl, "new0"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the restored copy already holds new0: %v", err)
			}
			sa, sb, _ := e.session(0, 1, 0)
			if sb.RecordsReceived < 21 {
				t.Fatalf("healing session: b received %d records, want the 21 it lost", sb.RecordsReceived)
			}
			if sa.RecordsSent != sb.RecordsReceived {
				t.Fatalf("stats disagree: a sent %d, b received %d", sa.RecordsSent, sb.RecordsReceived)
			}
			want, got := e.holdings(0), e.holdings(1)
			if !reflect.DeepEqual(keysOf(want), keysOf(got)) {
				t.Fatalf("after healing b holds %v, a %v", keysOf(got), keysOf(want))
			}
			for id, w := range want {
				if got[id].Heads != w.Heads {
					t.Fatalf("%s: heads differ after healing", id)
				}
			}
			sa, sb, _ = e.session(1, 0, 0)
			if sa.RecordsSent+sa.RecordsReceived+sb.RecordsSent+sb.RecordsReceived != 0 {
				t.Fatalf("the session after healing moved records: %+v / %+v", sa, sb)
			}
		})
	})
}

func keysOf(m map[string]healRecord) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestHealRestoredStoreWritesFirst: b's store is replaced by a copy older
// than b's own last writes to a record (which a holds), and b's user edits
// that record before b syncs again. b's new change reuses the (actor,
// sequence number) of the lost one; the next sessions must still bring
// a and b to the same record, holding both edits made after the copy.
func TestHealRestoredStoreWritesFirst(t *testing.T) {
	withRapidChecks(t, 1, func() {
		rapid.Check(t, func(rt *rapid.T) {
			e := newHealEnv(rt)
			defer e.close()
			a, ctx := e.replicas[0], context.Background()
			mustPut(t, a, healColl, "x", map[string]any{"v": "base"})
			e.session(0, 1, 0)
			e.snapshot(1)
			mustPut(t, e.replicas[1], healColl, "x", map[string]any{"lost": "written by b before its restore"})
			e.session(1, 0, 0)
			e.restoreFrom(1, 0)
			b := e.replicas[1]
			if err := b.Put(ctx, healColl, "x", map[string]any{"after": "written by b after its restore"}); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				e.session(1, 0, -1)
			}
			want, got := e.holdings(0)["x"], e.holdings(1)["x"]
			if want.Heads != got.Heads || got.Value["lost"] == nil || got.Value["after"] == nil || want.Value["after"] == nil {
				e.fatalf("after b's restore and its first write, a and b differ on x:\n a %+v\n b %+v", want, got)
			}
		})
	})
}
