package crdt

import (
	"encoding/binary"
	"sort"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
	"pgregory.net/rapid"
)

// hashSet returns the hashes of the changes in raw (concatenated change
// chunks), failing on a chunk it cannot hash (a compressed one).
func hashSet(t *rapid.T, raw []byte) []string {
	n := 0
	for rest := raw; len(rest) > 0; n++ {
		l, w := binary.Uvarint(rest[9:])
		rest = rest[9+w+int(l):]
	}
	hs, err := changeChunks(raw)
	if err != nil || len(hs) != n {
		t.Fatalf("%d chunks, %d hashed: %v", n, len(hs), err)
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	sort.Strings(out)
	return out
}

// TestPropertySaveIncrementalIsOnlyNew (issue 11 part 3): over sequences
// of local edits, remote changes received, and reloads from the stored
// bytes (snapshot plus incrementals, or a fresh snapshot), SaveIncremental
// returns exactly the changes the stored bytes lack: never the history
// again after a load, never less than a write made.
func TestPropertySaveIncrementalIsOnlyNew(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		clock := newTestClock()
		d, err := New(clock.actor("local", 0))
		if err != nil {
			t.Fatal(err)
		}
		remote, err := New(clock.actor("remote", 0))
		if err != nil {
			t.Fatal(err)
		}
		keys := rapid.SampledFrom([]string{"a", "b", "", "x\x00y", "\u00e9", strings.Repeat("k", 300)})
		values := rapid.OneOf(
			rapid.Just[any](nil),
			rapid.Map(rapid.Int64(), func(i int64) any { return i }),
			rapid.Map(rapid.StringN(0, 40, -1), func(s string) any { return s }),
			rapid.Map(rapid.IntRange(1, 20_000), func(n int) any { return strings.Repeat("v", n) }),
			rapid.Just[any](map[string]any{"nested": true}),
		)
		var store [][]byte // snapshot, then incrementals
		store = append(store, d.Save())
		persist := func(what string) {
			inc := d.SaveIncremental()
			all := []byte{}
			for _, b := range store {
				all = append(all, b...)
			}
			stored, err := automerge.Load(all)
			if err != nil {
				t.Fatalf("%s: stored bytes do not load: %v", what, err)
			}
			have := map[string]bool{}
			chs, err := stored.Changes()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range chs {
				have[c.Hash().String()] = true
			}
			mine, err := d.Changes()
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, c := range mine {
				if !have[c.Hash().String()] {
					want = append(want, c.Hash().String())
				}
			}
			sort.Strings(want)
			got := hashSet(t, inc)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("%s: SaveIncremental returned %d changes, the store lacks %d:\n got  %v\n want %v", what, len(got), len(want), got, want)
			}
			if len(inc) > 0 {
				store = append(store, inc)
			}
		}
		steps := rapid.IntRange(1, 25).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			clock.tick(1000)
			switch rapid.IntRange(0, 5).Draw(t, "op") {
			case 0, 1: // local edit
				k := keys.Draw(t, "key")
				v := values.Draw(t, "value")
				if err := d.Put(map[string]any{k: v}); err != nil && k != "" {
					t.Fatalf("put %q: %v", k, err)
				}
				persist("edit")
			case 2: // local delete of a field
				k := keys.Draw(t, "key")
				_ = d.Delete([]string{k}) // a missing key is ErrNotFound: nothing written
				persist("delete")
			case 3: // the remote side writes
				k := keys.Draw(t, "rkey")
				_ = remote.Put(map[string]any{k: values.Draw(t, "rvalue")})
			case 4: // receive the remote's changes (and conflict resolutions)
				if _, err := d.MergeFrom(remote); err != nil {
					t.Fatalf("merge: %v", err)
				}
				persist("receive")
				if rapid.Bool().Draw(t, "back") {
					if _, err := remote.MergeFrom(d); err != nil {
						t.Fatalf("merge back: %v", err)
					}
				}
			case 5: // reload from the store, sometimes compacting first
				if rapid.Bool().Draw(t, "compact") {
					store = [][]byte{d.Save()}
				}
				all := []byte{}
				for _, b := range store {
					all = append(all, b...)
				}
				if d, err = Load(all, d.Actor()); err != nil {
					t.Fatalf("reload: %v", err)
				}
				persist("reload") // nothing is new after a load
			}
		}
	})
}
