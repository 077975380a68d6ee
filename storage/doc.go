// Package storage is ferry's encrypted record store: Automerge documents,
// their metadata, a change feed, small sealed slots and append-only logs,
// kept in Badger with every value sealed (XChaCha20-Poly1305) and every key
// blinded (HMAC-SHA256), under a master key wrapped by a passphrase
// (Argon2id) or a raw 32-byte key. It also writes and reads age-encrypted
// backups; documents and heads are opaque bytes to it (it does not import
// automerge-go), so an import hands verified records to an Importer.
//
// It knows nothing of policies or peers. docs/storage.md describes the key
// hierarchy, the on-disk formats, what tampering is detected, rotation and
// crash safety, and the backup format.
//
// # Usage
//
//	st, err := storage.Create(ctx, dir, storage.Options{Passphrase: pass})
//	// or storage.Open(ctx, dir, storage.Options{Passphrase: pass})
//	defer st.Close()
//
//	doc := automerge.New()
//	doc.Path("title").Set("hello")
//	doc.Commit("create")
//	metas, err := st.Write(ctx, storage.Batch{Records: []storage.RecordWrite{{
//		Collection: "notes", ID: "n1",
//		Changes:    doc.SaveIncremental(),
//		Snapshot:   func() ([]byte, error) { return doc.Save(), nil },
//		Heads:      crdt.Heads(doc.Heads()).Bytes(), // 32-byte change hashes
//	}}})
//
//	data, meta, err := st.Load(ctx, "notes", "n1")
//	doc2, err := automerge.Load(data)
//
// A Batch is one Badger transaction: records, their metas and feed entries,
// and slot writes (e.g. a sync cursor) commit together or not at all.
package storage
