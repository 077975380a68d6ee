package replica

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/storage"
	"pgregory.net/rapid"
)

// chunkHashes returns the sorted hashes of the change chunks in raw.
func chunkHashes(t *rapid.T, raw []byte) []string {
	chunks, err := splitChanges(raw)
	if err != nil {
		t.Fatalf("appended bytes are not change chunks: %v", err)
	}
	out := make([]string, 0, len(chunks))
	for _, c := range chunks {
		if c[8] != 1 {
			t.Fatalf("chunk of type %d appended", c[8])
		}
		sum := sha256.Sum256(c[8:]) // an uncompressed change's hash
		out = append(out, automerge.ChangeHash(sum).String())
	}
	sort.Strings(out)
	return out
}

// TestPropertyWriteStoresOnlyItsChanges (issue 11 part 3): over sequences
// of local edits, reloads (the document dropped from the cache) and
// records received from another replica, every write appends to the
// stored record exactly the changes it made or received, never the
// history again (or the store compacts the record into one snapshot with
// the same heads).
func TestPropertyWriteStoresOnlyItsChanges(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	open := func(name string) *Replica {
		r, err := Open(ctx, "", Options{Passphrase: []byte("pw-" + name), KDF: storage.TestKDF(), InMemory: true, Name: name, Now: clock.Now, CacheSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := open("a"), open("b")
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		id := fmt.Sprintf("r%d", run) // one record per run
		keys := rapid.SampledFrom([]string{"a", "b", "x\x00y", "\u00e9", strings.Repeat("k", 200)})
		values := rapid.OneOf(
			rapid.Just[any](nil),
			rapid.Map(rapid.Int64(), func(i int64) any { return i }),
			rapid.Map(rapid.StringN(0, 30, -1), func(s string) any { return s }),
			rapid.Map(rapid.IntRange(100, 30_000), func(n int) any { return strings.Repeat("v", n) }),
		)
		stored := func(r *Replica) ([]byte, storage.RecordMeta, bool) {
			data, meta, err := r.store.Load(ctx, "items", id)
			if err != nil {
				return nil, meta, false
			}
			return data, meta, true
		}
		// snap and inc follow the stored record's snapshot and incremental
		// sizes: storage compacts only when the incrementals outweigh the
		// snapshot.
		snap, inc := 0, 0
		// check runs op on a and checks what it appended to a's record.
		check := func(what string, op func()) {
			prev, prevMeta, existed := stored(a)
			op()
			data, meta, ok := stored(a)
			if !ok || existed && meta.Seq == prevMeta.Seq {
				return // nothing written
			}
			if !existed {
				snap, inc = len(data), 0
			}
			doc, err := crdt.Load(data, crdt.Actor{ReplicaID: "check"})
			if err != nil {
				rt.Fatalf("%s: the record does not load: %v", what, err)
			}
			metaHeads, err := crdt.HeadsFromBytes(meta.Heads)
			if err != nil {
				rt.Fatal(err)
			}
			if !doc.Heads().Equal(metaHeads) {
				rt.Fatalf("%s: stored heads differ from the record's", what)
			}
			if !existed {
				return
			}
			prevHeads, err := crdt.HeadsFromBytes(prevMeta.Heads)
			if err != nil {
				rt.Fatal(err)
			}
			want, err := doc.ChangesSince(prevHeads...)
			if err != nil {
				rt.Fatal(err)
			}
			if !bytes.HasPrefix(data, prev) {
				// Compacted into one snapshot: only when the incrementals,
				// with this write's changes, outweigh the snapshot (a write
				// that appended the history again would compact early).
				if inc+len(want) <= snap {
					rt.Fatalf("%s: compacted with %d bytes of incrementals (%d new) over a %d-byte snapshot", what, inc+len(want), len(want), snap)
				}
				snap, inc = len(data), 0
				return
			}
			inc += len(data) - len(prev)
			got := chunkHashes(rt, data[len(prev):])
			exp := chunkHashes(rt, want)
			if strings.Join(got, ",") != strings.Join(exp, ",") {
				rt.Fatalf("%s: appended %d changes, wrote %d new ones", what, len(got), len(exp))
			}
		}
		put := func(r *Replica, fields map[string]any) {
			if err := r.Put(ctx, "items", id, fields); err != nil {
				rt.Fatalf("put: %v", err)
			}
		}
		check("create", func() { put(a, map[string]any{"start": true}) })
		for range rapid.IntRange(1, 20).Draw(rt, "steps") {
			clock.Advance(1000)
			switch rapid.IntRange(0, 4).Draw(rt, "op") {
			case 0:
				k, v := keys.Draw(rt, "key"), values.Draw(rt, "value")
				check("put", func() { put(a, map[string]any{k: v}) })
			case 1:
				k := keys.Draw(rt, "key")
				check("delete", func() {
					_ = a.Update(ctx, "items", id, func(d *crdt.Doc) error { return d.Delete([]string{k}) })
				})
			case 2:
				a.cache.clear() // the next write loads the record
			case 3:
				k, v := keys.Draw(rt, "bkey"), values.Draw(rt, "bvalue")
				put(b, map[string]any{k: v})
			case 4:
				// a receives b's record (all of it: a keeps only what is new).
				data, meta, ok := stored(b)
				if !ok {
					continue
				}
				doc, err := crdt.Load(data, crdt.Actor{ReplicaID: "x"})
				if err != nil {
					rt.Fatal(err)
				}
				changes, err := doc.ChangesSince()
				if err != nil {
					rt.Fatal(err)
				}
				check("receive", func() {
					rc := recordChanges{Collection: "items", ID: id, Heads: meta.Heads, Changes: changes}
					if _, _, _, err := a.applyRecords(ctx, b.ID(), []recordChanges{rc}, 0); err != nil {
						rt.Fatalf("apply: %v", err)
					}
				})
			}
		}
	})
}
