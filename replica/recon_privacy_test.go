package replica

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"pgregory.net/rapid"
)

// reconShape describes the reconciliation frames in frames (as sent by one
// side) by everything but their keyed values: ranges with their bounds,
// modes and item counts, heads entries with their rounds. Fingerprints and
// tags are HMACs under a per-session key; their shape is what could depend
// on records outside the reconciled set.
//
// The parts of a bucket split by key tag depend on the session's key
// (which records fall in which part, and so how many parts differ, how
// deep the split goes and which side lists): with coarse, the shape keeps
// the ranges of whole buckets in order and the set of buckets split by
// key tag, and leaves out the heads entries that follow.
func reconShape(t interface{ Fatalf(string, ...any) }, frames [][]byte, coarse bool) string {
	var sb strings.Builder
	keyed := map[uint16]bool{}
	for _, f := range frames {
		m, err := decodeMsg(f)
		if err != nil {
			t.Fatalf("decode a recorded frame: %v", err)
		}
		if m.T != msgRecon {
			continue
		}
		if !coarse {
			fmt.Fprintf(&sb, "frame reply=%v\n", m.Recon.Reply)
		}
		for _, r := range m.Recon.Ranges {
			if coarse && (r.Sub != 0 || r.Hi-r.Lo == 1 && r.Mode == rangeSplit) {
				keyed[r.Lo] = true
				continue
			}
			fmt.Fprintf(&sb, " range [%d,%d) part %#x mode %d parts %v fp %d items %d\n",
				r.Lo, r.Hi, r.Sub, r.Mode, r.Parts, len(r.FP), len(r.Items)/reconItemLen)
		}
		if coarse {
			continue
		}
		for _, h := range m.Recon.Heads {
			fmt.Fprintf(&sb, " heads round %d lack %v n %d\n", h.Round, h.Lack, len(h.Heads))
		}
	}
	bs := slices.Sorted(maps.Keys(keyed))
	if len(bs) > 0 {
		fmt.Fprintf(&sb, "buckets split by key tag: %v\n", bs)
	}
	return sb.String()
}

// TestPropertyReconRevealsNothingUngranted: a reconciles with b while
// holding records of a collection b holds no grant for. What a sends in
// reconciliation frames has the same shape whether or not those records
// exist (so it reveals nothing about them, not even their number), and no
// name of theirs crosses in any frame.
func TestPropertyReconRevealsNothingUngranted(t *testing.T) {
	// Each case runs four replicas and two sessions: 10 cases unless
	// -rapid.checks says otherwise, to keep the suite fast.
	limitChecks(t, 10)
	rapid.Check(t, func(rt *rapid.T) {
		p := privacyCase{
			nGranted: rapid.IntRange(0, 12).Draw(rt, "granted"),
			nHidden:  rapid.IntRange(1, 12).Draw(rt, "hidden"),
			dense:    rapid.Bool().Draw(rt, "dense"),
			seed:     rapid.Int64().Draw(rt, "seed"),
		}
		p.bHolds = rapid.IntRange(0, p.nGranted).Draw(rt, "b-holds")
		checkPrivacyCase(rt, p)
	})
	// One case that surely splits a bucket by key tag.
	p := privacyCase{nGranted: 12, nHidden: 12, bHolds: 8, dense: true, seed: 1}
	if sw := checkPrivacyCase(t, p); !strings.Contains(sw, "split by key tag") {
		t.Fatalf("no bucket was split by key tag: the case checks nothing new:\n%s", sw)
	}
}

// privacyCase is one world of TestPropertyReconRevealsNothingUngranted:
// a holds nGranted records of the shown collection (b holds its own
// versions of the first bHolds) and, in one of the two runs, nHidden of
// a collection b holds no grant for. dense puts the shown records in two
// buckets and makes a bucket of more than one record split by key tag.
type privacyCase struct {
	nGranted, nHidden, bHolds int
	dense                     bool
	seed                      int64
}

// denseIDs returns n record ids of coll whose keys fall in buckets 0 and
// 1.
func denseIDs(coll string, n int) []string {
	var ids []string
	for i := 0; len(ids) < n; i++ {
		id := fmt.Sprintf("s%06d", i)
		if storage.ReconBucket(storage.ReconKey(coll, id)) < 2 {
			ids = append(ids, id)
		}
	}
	return ids
}

// checkPrivacyCase runs the case with and without the hidden records and
// fails unless a's reconciliation frames have the same shape; it returns
// the shape.
func checkPrivacyCase(rt interface {
	Fatal(...any)
	Fatalf(string, ...any)
}, p privacyCase) string {
	nGranted, nHidden, bHolds, seed := p.nGranted, p.nHidden, p.bHolds, p.seed
	ids := make([]string, nGranted)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%02d", i)
	}
	if p.dense {
		ids = denseIDs("shown", nGranted)
		old := reconListSmall
		reconListSmall = 1
		defer func() { reconListSmall = old }()
	}
	{
		world := func(withHidden bool) ([][]byte, error) {
			ctx := context.Background()
			clock := newFakeClock()
			net := transport.NewMemNetwork(seed, func(string) {})
			defer net.Close()
			open := func(name string) *Replica {
				r, err := Open(ctx, "", Options{Passphrase: []byte("pw"), KDF: storage.TestKDF(),
					InMemory: true, Name: name, Now: clock.Now, Policies: policy.NewSet(policy.Rule{})})
				if err != nil {
					rt.Fatal(err)
				}
				return r
			}
			// a initiates in both worlds (the side with the smaller
			// identity does): draw identities until it is a.
			a, b := open("a"), open("b")
			for a.ID() > b.ID() {
				b.Close()
				b = open("b")
			}
			defer a.Close()
			defer b.Close()
			if _, err := b.Pair(ctx, a.ID(), []string{"shown", "hidden"}, 0); err != nil {
				rt.Fatal(err)
			}
			if _, err := a.Pair(ctx, b.ID(), []string{"shown"}, 0); err != nil {
				rt.Fatal(err)
			}
			put := func(r *Replica, coll, id string, v any) {
				if err := r.Put(ctx, coll, id, map[string]any{"v": v}); err != nil {
					rt.Fatal(err)
				}
			}
			for i := range nGranted {
				put(a, "shown", ids[i], i)
			}
			for i := range bHolds {
				put(b, "shown", ids[i], "b's own")
			}
			if withHidden {
				for i := range nHidden {
					put(a, "hidden", fmt.Sprintf("secret-id-%02d", i), i)
				}
			}
			l, err := net.Listen(b.ID(), pub(b))
			if err != nil {
				rt.Fatal(err)
			}
			defer l.Close()
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				conn, err := l.Accept(sctx)
				if err != nil {
					done <- err
					return
				}
				defer conn.Close()
				_, err = b.Sync(sctx, conn)
				done <- err
			}()
			raw, err := net.Dialer(a.ID(), pub(a)).Dial(sctx, b.ID())
			if err != nil {
				rt.Fatal(err)
			}
			rec, recorder := transport.Record(raw)
			_, errA := a.Sync(sctx, rec)
			rec.Close()
			if errB := <-done; errA == nil {
				errA = errB
			}
			return recorder.Sent(), errA
		}
		with, err := world(true)
		if err != nil {
			rt.Fatal(err)
		}
		without, err := world(false)
		if err != nil {
			rt.Fatal(err)
		}
		for _, f := range with {
			if strings.Contains(string(frameContent(rt, f)), "secret-id-") {
				rt.Fatal("an ungranted record's id crossed")
			}
		}
		sw, so := reconShape(rt, with, p.dense), reconShape(rt, without, p.dense)
		if sw != so {
			rt.Fatalf("reconciliation frames differ with ungranted records:\n%s\nwithout:\n%s", sw, so)
		}
		if nGranted > 0 && !strings.Contains(sw, "range") {
			rt.Fatal("no reconciliation ran: the property checks nothing")
		}
		return sw
	}
}

// limitChecks sets rapid's number of cases to n for this test, unless
// -rapid.checks was given on the command line.
func limitChecks(t *testing.T, n int) {
	f := flag.Lookup("rapid.checks")
	if f == nil {
		return
	}
	set := false
	flag.Visit(func(g *flag.Flag) { set = set || g.Name == "rapid.checks" })
	if set {
		return
	}
	old := f.Value.String()
	if err := f.Value.Set(strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set(old) })
}
