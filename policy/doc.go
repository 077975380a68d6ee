// Package policy decides the semantic conflicts crdt.MergeRemote reports.
//
// Policies are chosen per collection with per-field overrides (longest
// matching field path wins): Merge (Automerge's own winner), Timestamp
// (latest HLC, replica id breaks ties; the default), Priority (higher
// priority from the writing replica or a field of the value; ties fall to
// Timestamp) and User (a provisional Timestamp winner now, the conflict
// queued until the user picks a candidate or supplies a value, or until the
// deadline when a fallback policy decides). Policies read only what is in the
// documents, so every replica decides the same, and a Set has a Fingerprint
// that peers compare. A queued conflict that a newer write to its field
// superseded is closed, never decided (Resolver.Supersede, ErrStale), and
// candidate times are bounded by the clock notes in the document (Clamps).
//
// # Usage
//
//	set, _ := policy.Parse(policyJSON)
//	r := &policy.Resolver{Policies: set, Queue: policy.NewQueue(kv), Audit: &policy.Audit{Log: log}}
//	res, _ := doc.MergeRemote(changes, remoteHeads)
//	out, _ := r.Resolve(ctx, "notes", id, doc, res) // writes the resolutions into doc
//	entries, _ := r.Queue.List(ctx)                  // what the user must decide
//	p, _ := r.Queue.ResolvePick(ctx, entries[0].ID(), 1)
//	_ = r.Commit(ctx, docOf(p.Entry.RecordID), p)
//	due, _ := r.Queue.Sweep(ctx, now)                // deadline fallbacks, Commit each
//	closed, _ := r.Supersede(ctx, "notes", id, doc)  // after a local write: conflicts it made stale
//
// See docs/policy.md for the file format and the determinism argument.
package policy

import "sort"

func sortStrings(s []string) { sort.Strings(s) }
