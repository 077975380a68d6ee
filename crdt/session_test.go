package crdt

import "testing"

// Two openings of one replica write as two Automerge actors: a copy of a
// document restored from before a change and edited again does not reuse
// the lost change's (actor, seq), so the two histories still merge.
func TestSessionActorsMergeAfterRestore(t *testing.T) {
	again := SessionActorID
	if SessionActorID("r1", "a") == SessionActorID("r1", "b") || SessionActorID("r1", "a") == ActorIDFor("r1") ||
		SessionActorID("r1", "a") != again("r1", "a") || len(SessionActorID("r1", "a")) != 32 {
		t.Fatal("session actor ids are not distinct per session and stable per (replica, session)")
	}
	d, err := New(Actor{ReplicaID: "r1", Session: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Put(map[string]any{"a": int64(1)}); err != nil {
		t.Fatal(err)
	}
	snap := d.Save()
	if err := d.Put(map[string]any{"lost": "only on the peer"}); err != nil { // sent to a peer, then lost here
		t.Fatal(err)
	}
	peer, err := Load(d.Save(), Actor{ReplicaID: "r2"})
	if err != nil {
		t.Fatal(err)
	}
	restored, err := Load(snap, Actor{ReplicaID: "r1", Session: "s2"}) // the old copy, reopened
	if err != nil {
		t.Fatal(err)
	}
	if err := restored.Put(map[string]any{"after": "written after the restore"}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.MergeFrom(restored); err != nil {
		t.Fatalf("peer merging the restored replica's edit: %v", err)
	}
	for _, k := range []string{"a", "lost", "after"} {
		if _, err := peer.Get(k); err != nil {
			t.Fatalf("peer lacks %q after the merge: %v", k, err)
		}
	}
}
