package crdt

import (
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

// plainClient is an Automerge client that knows nothing of ferry.
func plainClient(t *testing.T, from []byte, actor string) *automerge.Doc {
	t.Helper()
	var d *automerge.Doc
	var err error
	if from == nil {
		d = automerge.New()
	} else if d, err = automerge.Load(from); err != nil {
		t.Fatal(err)
	}
	if err := d.SetActorID(actor); err != nil {
		t.Fatal(err)
	}
	return d
}

func plainCommit(t *testing.T, d *automerge.Doc, ms int64) {
	t.Helper()
	when := time.UnixMilli(ms)
	if _, err := d.Commit("edit from a plain client", automerge.CommitOptions{Time: &when}); err != nil {
		t.Fatal(err)
	}
}

func TestPlainAutomergeDocuments(t *testing.T) {
	const plainActor = "0123456789abcdef"
	cases := []struct {
		name  string
		plain func(t *testing.T, d *automerge.Doc)
		ferry func(d *Doc) error
		want  []wantConflict
	}{
		{name: "value conflict",
			plain: func(t *testing.T, d *automerge.Doc) { _ = d.Path("title").Set("plain") },
			ferry: func(d *Doc) error { return d.Set("title", "ferry") },
			want:  []wantConflict{{"/title", ConflictValue, 2}}},
		{name: "different keys",
			plain: func(t *testing.T, d *automerge.Doc) { _ = d.Path("a").Set("plain") },
			ferry: func(d *Doc) error { return d.Set("b", "ferry") }},
		{name: "parent deleted by plain client",
			plain: func(t *testing.T, d *automerge.Doc) { _ = d.Path("profile").Delete() },
			ferry: func(d *Doc) error { return d.Set("profile.city", "Oslo") },
			want:  []wantConflict{{"/profile/city", ConflictEditDelete, 2}}},
		{name: "type change by plain client",
			plain: func(t *testing.T, d *automerge.Doc) { _ = d.Path("title").Set(int64(7)) },
			ferry: func(d *Doc) error { return d.Set("title", "ferry") },
			want:  []wantConflict{{"/title", ConflictType, 2}}},
		{name: "concurrent list edits",
			plain: func(t *testing.T, d *automerge.Doc) { _ = d.Path("tags").List().Append("p") },
			ferry: func(d *Doc) error { return d.ListAppend("tags", "f") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The document itself was created by a plain client.
			origin := plainClient(t, nil, "aaaaaaaa")
			_ = origin.Path("title").Set("t0")
			_ = origin.Path("profile").Set(map[string]any{"city": "Paris"})
			_ = origin.Path("tags").Set([]any{"x"})
			plainCommit(t, origin, 1_600_000_000_000)

			clk := newTestClock()
			f, err := Load(origin.Save(), clk.actor("F", 1))
			if err != nil {
				t.Fatal(err)
			}
			p := plainClient(t, origin.Save(), plainActor)
			tc.plain(t, p)
			plainCommit(t, p, clk.now().UnixMilli()+5000)
			if err := tc.ferry(f); err != nil {
				t.Fatal(err)
			}
			f0 := copyDoc(t, f)
			res, err := f.MergeRemote(mustChanges(t, p), p.Heads())
			if err != nil {
				t.Fatal(err)
			}
			if !res.Fallback {
				t.Fatal("plain changes must use the three-way fallback")
			}
			if len(res.Conflicts) != len(tc.want) {
				t.Fatalf("conflicts %+v, want %v", res.Conflicts, tc.want)
			}
			for i, w := range tc.want {
				c := res.Conflicts[i]
				if c.Path != w.path || c.Kind != w.kind || len(c.Candidates) != w.cands {
					t.Fatalf("got %s %s %d, want %+v", c.Path, c.Kind, len(c.Candidates), w)
				}
				var plainSeen bool
				for _, cd := range c.Candidates {
					if cd.FromPlainAutomerge {
						plainSeen = true
						if !strings.HasPrefix(cd.ReplicaID, "automerge:") || cd.HLC.WallMillis != clk.now().UnixMilli()+5000 {
							t.Fatalf("plain candidate origin %+v", cd)
						}
					} else if cd.ReplicaID != "F" || cd.Priority != 1 {
						t.Fatalf("ferry candidate origin %+v", cd)
					}
				}
				if !plainSeen {
					t.Fatalf("no plain candidate in %+v", c.Candidates)
				}
				// The same conflict seen from a second ferry replica that
				// merges in the other order has the same id.
				g := copyDoc(t, f0)
				gRes, err := g.MergeRemote(mustChanges(t, p), p.Heads())
				if err != nil || len(gRes.Conflicts) != len(res.Conflicts) || gRes.Conflicts[i].ID != c.ID {
					t.Fatalf("second detection differs: %+v %v", gRes.Conflicts, err)
				}
				// Resolve for the ferry candidate; the plain client can load
				// the result.
				win := 0
				for j, cd := range c.Candidates {
					if !cd.FromPlainAutomerge {
						win = j
					}
				}
				if err := f.Resolve(Resolution{Conflict: c, Winner: win, By: "test"}); err != nil {
					t.Fatal(err)
				}
			}
			// The plain client takes ferry's changes and sees the same JSON
			// (minus ferry's hidden keys).
			if err := p.LoadIncremental(automerge.SaveChanges(mustChanges(t, f.Automerge()))); err != nil {
				t.Fatal(err)
			}
			fm, _ := f.ToMap()
			pv := p.Root().Interface().(map[string]any)
			for k := range pv {
				if strings.HasPrefix(k, MetaPrefix) {
					delete(pv, k)
				}
			}
			if len(pv) != len(fm) {
				t.Fatalf("plain client sees %v, ferry %v", pv, fm)
			}
		})
	}
}

func mustChanges(t *testing.T, d *automerge.Doc) []*automerge.Change {
	t.Helper()
	chs, err := d.Changes()
	if err != nil {
		t.Fatal(err)
	}
	return chs
}
