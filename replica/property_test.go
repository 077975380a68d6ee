package replica

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"pgregory.net/rapid"
)

// propEnv is a rapid-driven group of replicas on one in-memory network.
type propEnv struct {
	rt       *rapid.T
	clock    *fakeClock
	net      *transport.MemNetwork
	replicas []*Replica
	copies   int
}

var propPolicies = []policy.Kind{policy.Timestamp, policy.Priority, policy.Merge, policy.User}

func newPropEnv(rt *rapid.T) *propEnv {
	rt.Helper()
	seed := rapid.Int64().Draw(rt, "netseed")
	e := &propEnv{rt: rt, clock: newFakeClock(), net: transport.NewMemNetwork(seed, func(string) {})}
	kind := rapid.SampledFrom(propPolicies).Draw(rt, "policy")
	set := policy.NewSet(policy.Rule{Policy: kind})
	n := rapid.IntRange(2, 5).Draw(rt, "replicas")
	for i := range n {
		r, err := Open(context.Background(), "", Options{
			Passphrase: []byte("pw"), KDF: storage.TestKDF(), InMemory: true,
			Name: fmt.Sprintf("r%d", i), Priority: i % 3, Now: e.clock.Now, Policies: set,
			CacheSize: rapid.IntRange(1, 8).Draw(rt, "cache"),
		})
		if err != nil {
			rt.Fatal(err)
		}
		e.replicas = append(e.replicas, r)
	}
	pairAll(rt, e.replicas, "items")
	return e
}

func (e *propEnv) close() {
	for _, r := range e.replicas {
		r.Close()
	}
	e.net.Close()
}

// session runs one sync between replicas i and j, optionally cut after a
// number of frames; a cut session fails, which is allowed.
func (e *propEnv) session(i, j int, cutAfter int) error {
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
	errB := make(chan error, 1)
	go func() {
		conn, err := l.Accept(ctx)
		if err != nil {
			errB <- err
			return
		}
		defer conn.Close()
		_, err = b.Sync(ctx, conn)
		errB <- err
	}()
	conn, err := e.net.Dialer(a.ID(), pub(a)).Dial(ctx, b.ID())
	if err != nil {
		cancel()
		<-errB
		return err
	}
	_, errA := a.Sync(ctx, conn)
	conn.Close()
	eb := <-errB
	if cutAfter == 0 && (errA != nil || eb != nil) {
		e.rt.Fatalf("fault-free session %d<->%d failed: %v / %v", i, j, errA, eb)
	}
	if errA != nil {
		return errA
	}
	return eb
}

var propFields = []string{"title", "qty", "done", "meta"}

// edit applies one random operation to a random record of replica r.
func (e *propEnv) edit(r *Replica) {
	rt := e.rt
	rec := fmt.Sprintf("r%d", rapid.IntRange(0, 3).Draw(rt, "record"))
	op := rapid.IntRange(0, 7).Draw(rt, "op")
	field := rapid.SampledFrom(propFields).Draw(rt, "field")
	ctx := context.Background()
	err := r.Update(ctx, "items", rec, func(d *crdt.Doc) error {
		switch op {
		case 0, 1:
			return d.Set(field, rapid.SampledFrom([]any{"x", "y", int64(7), true, nil}).Draw(rt, "value"))
		case 2:
			return d.Set("nested."+field, rapid.IntRange(0, 3).Draw(rt, "nv"))
		case 3:
			if err := d.Delete(field); err != nil && !isMissing(err) {
				return err
			}
			return nil
		case 4:
			return d.ListAppend("list", rapid.IntRange(0, 9).Draw(rt, "item"))
		case 5:
			if _, err := d.Get("text"); isMissing(err) {
				return d.NewText("text", "ab")
			}
			return d.SpliceText("text", 0, 0, "z")
		case 6:
			if _, err := d.Get("count"); isMissing(err) {
				return d.Set("count", crdt.Counter(0))
			}
			return d.Increment("count", 1)
		default:
			if d.Deleted() {
				return d.Set(field, "revived")
			}
			return d.DeleteRecord()
		}
	})
	if err != nil && !isMissing(err) && !isKindErr(err) {
		rt.Fatalf("edit op %d: %v", op, err)
	}
}

// copyRecord copies one record of r into a new record (ExportDoc,
// ImportDoc), so that the two share history: the conflicts copied, queued
// again for the copy, have the same conflict ids in two records. The copy
// is a record never written before: merging two records that one replica
// wrote independently is refused by Automerge (one actor, two changes with
// the same sequence number).
func (e *propEnv) copyRecord(r *Replica) {
	rt := e.rt
	src := fmt.Sprintf("r%d", rapid.IntRange(0, 3).Draw(rt, "copyFrom"))
	e.copies++
	dst := fmt.Sprintf("copy%d", e.copies)
	ctx := context.Background()
	doc, err := r.ExportDoc(ctx, "items", src)
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		rt.Fatalf("export %s: %v", src, err)
	}
	if _, err := r.ImportDoc(ctx, "items", dst, doc); err != nil && !errors.Is(err, ErrInvalid) {
		rt.Fatalf("import %s into %s: %v", src, dst, err)
	}
}

func isMissing(err error) bool { return err != nil && errors.Is(err, crdt.ErrNotFound) }

// isKindErr: an edit that does not fit the field's current type (splice
// into a field that a merge made a string) is refused, not a failure.
func isKindErr(err error) bool { return err != nil && errors.Is(err, crdt.ErrBadPath) }

// state is everything that must be identical on every replica.
type replicaState struct {
	Records   map[string]map[string]any
	Deleted   []string
	Conflicts []string
}

func (e *propEnv) state(r *Replica) replicaState {
	ctx := context.Background()
	st := replicaState{Records: map[string]map[string]any{}}
	page, err := r.List(ctx, "items", ListOptions{Deleted: true})
	if err != nil {
		e.rt.Fatal(err)
	}
	for _, it := range page.Items {
		if it.Deleted {
			st.Deleted = append(st.Deleted, it.ID)
			continue
		}
		m, err := r.Get(ctx, "items", it.ID)
		if err != nil {
			e.rt.Fatal(err)
		}
		st.Records[it.ID] = m
	}
	list, err := r.Conflicts(ctx)
	if err != nil {
		e.rt.Fatal(err)
	}
	for _, c := range list {
		st.Conflicts = append(st.Conflicts, c.ID()+"/"+c.RecordID+"/"+c.Conflict.ID)
	}
	sort.Strings(st.Conflicts)
	return st
}

// TestPropertyReplicasConverge: 2-5 replicas make random edits under a
// random policy and sync in random pairs over a network that cuts
// sessions at random frames. After fault-free rounds every replica holds
// the same records and the same conflict queue, and a further round moves
// nothing.
func TestPropertyReplicasConverge(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		e := newPropEnv(rt)
		defer e.close()
		n := len(e.replicas)
		steps := rapid.IntRange(1, 25).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 4).Draw(rt, "action") {
			case 0, 1:
				e.edit(e.replicas[rapid.IntRange(0, n-1).Draw(rt, "who")])
			case 4:
				e.copyRecord(e.replicas[rapid.IntRange(0, n-1).Draw(rt, "who")])
			case 2:
				i := rapid.IntRange(0, n-1).Draw(rt, "from")
				j := (i + 1 + rapid.IntRange(0, n-2).Draw(rt, "to")) % n
				cut := 0
				if rapid.Bool().Draw(rt, "fault") {
					cut = rapid.IntRange(1, 8).Draw(rt, "cutAfter")
				}
				_ = e.session(i, j, cut)
			case 3:
				e.clock.Advance(time.Duration(rapid.IntRange(0, 5000).Draw(rt, "ms")) * time.Millisecond)
			}
		}
		// Fault-free: a star twice gets everything everywhere.
		for range 2 {
			for j := 1; j < n; j++ {
				e.session(0, j, 0)
			}
		}
		want := e.state(e.replicas[0])
		for i := 1; i < n; i++ {
			if got := e.state(e.replicas[i]); !reflect.DeepEqual(got, want) {
				rt.Fatalf("replica %d diverged:\n got %#v\nwant %#v", i, got, want)
			}
		}
		before := make([]uint64, n)
		for i, r := range e.replicas {
			before[i] = r.store.LastSeq()
		}
		for j := 1; j < n; j++ {
			e.session(0, j, 0)
		}
		for i, r := range e.replicas {
			if r.store.LastSeq() != before[i] {
				rt.Fatalf("replica %d wrote during a quiescent round", i)
			}
		}
	})
}
