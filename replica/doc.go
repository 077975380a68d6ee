// Package replica is ferry's entry point: one device's copy of the user's
// data. A Replica holds records (Automerge documents, package crdt) in an
// encrypted store (package storage), decides semantic conflicts with a
// policy set (package policy), gates everything that leaves the device
// with a consent ledger (package privacy/consent), and syncs with peers
// over any transport.Conn or through a zero-knowledge relay.
//
// A Replica drives the outside world through small interfaces, each with an
// in-memory implementation for tests:
//
//   - transport.Conn for direct sessions (transport.MemNetwork in tests,
//     transport.DialTLS / ListenTLS in use);
//   - relay.API for relays, chosen per relay URL by Options.Relay
//     (HTTPRelay by default; relay.NewMemRelay().Client in tests);
//   - collector.Destination for one-way anonymized shares
//     (ShareOptions.Destination: collector.HTTPDestination, PeerDestination,
//     or collector.MemDestination in tests).
//
// Records are addressed by a collection name and a record id (see
// docs/replica.md for the naming rule); values are JSON-like
// (map[string]any, []any, string, float64/int64, bool, nil, []byte).
//
// # Usage
//
//	r, err := replica.Open(ctx, dir, replica.Options{Passphrase: pass, Name: "laptop"})
//	if err != nil { ... } // storage.ErrWrongKey, storage.ErrLocked, ...
//	defer r.Close()
//
//	_ = r.Put(ctx, "notes", "groceries", map[string]any{"title": "Groceries"})
//	_ = r.Update(ctx, "notes", "groceries", func(d *crdt.Doc) error {
//		return d.ListAppend("items", "eggs")
//	})
//	rec, _ := r.Get(ctx, "notes", "groceries")
//	page, _ := r.List(ctx, "notes", replica.ListOptions{})
//
//	// Direct sync with a paired peer over TLS, each side pinning the other.
//	_, _ = r.Pair(ctx, phoneID, []string{"notes"}, 0)
//	conn, _ := transport.DialTLS(ctx, addr, r.Identity(), transport.NewPinSet(phoneKey), transport.TLSOptions{})
//	stats, err := r.Sync(ctx, conn)
//
//	// Through a relay: create a space, invite the other device, sync.
//	space, _ := r.CreateSpace(ctx, "https://relay.example", []string{"notes"})
//	inv, _ := r.Invite(ctx, space.ID, joinCodeFromPhone)
//	_, _ = r.SyncRelay(ctx, space.ID)
//
//	// Conflicts a user-choice policy left open, events, keys.
//	open, _ := r.Conflicts(ctx)
//	events := r.Watch(ctx)
//	_ = r.ChangePassphrase(ctx, replica.Secret{Passphrase: newPass})
//
// Errors are wrapped around this package's sentinels (ErrInvalid,
// ErrNotFound, ErrNoConsent, ErrProtocol, ErrUnknownSpace, ...) and the
// storage, relay and transport sentinels they pass through, so errors.Is
// works on all of them. A Replica is safe for concurrent use.
//
// See docs/replica.md and docs/sync.md for the design as built.
package replica
