// Package crdt is ferry's record model: a JSON-like document over an
// Automerge document, with a hybrid logical clock, hidden per-field write
// metadata, and semantic conflict detection whose cost follows the changes
// exchanged rather than the history.
//
// Every write goes through a Doc bound to an Actor (replica id, priority,
// clock) and commits one Automerge change whose message carries a compact
// write-set (CBOR: the fields written, their values, HLC, replica,
// priority). MergeRemote applies remote changes and compares the two sides'
// write-sets to report conflicts: the same field set to different values,
// a field edited while it or a parent or the record was deleted, a field
// whose type changed. Maps with different keys, lists, text and counters
// merge by the CRDT without conflicts. Package policy decides conflicts and
// writes the resolutions with Doc.Resolve.
//
// # Usage
//
//	clock := crdt.NewClock(nil, 0)
//	d, _ := crdt.New(crdt.Actor{ReplicaID: "laptop", Priority: 1, Clock: clock})
//	_ = d.Put(map[string]any{"title": "groceries", "items": []any{"milk"}})
//	_ = d.Set("owner.name", "ada")
//	_ = d.ListAppend("items", "eggs")
//	saved := d.Save()
//
//	// on another replica
//	e, _ := crdt.Load(saved, crdt.Actor{ReplicaID: "phone", Clock: clock})
//	res, _ := e.MergeChanges(changes, remoteHeads)
//	for _, c := range res.Conflicts { ... } // decide with package policy
//
// See docs/crdt.md for the metadata layout, the write-set format and the
// detection algorithm.
package crdt
