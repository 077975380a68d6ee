package relay

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// badgerAside is where a migrated Badger relay database is moved, inside
// the relay directory.
const badgerAside = "badger-migrated"

// hasBadger reports whether dir holds a Badger database (the relay's
// store before JetStream).
func hasBadger(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "MANIFEST"))
	return err == nil
}

// migrateBadger copies a Badger relay database in dir into js (spaces,
// member lists, cursors, counters, live bundles with their sequence
// numbers) and moves the Badger files to dir/badger-migrated. It is
// idempotent: a migration cut short runs again at the next start and
// skips what it already copied.
func migrateBadger(ctx context.Context, dir string, js *jsStore) error {
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithReadOnly(false))
	if err != nil {
		return err
	}
	n, err := copyBadger(ctx, db, js)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := moveAside(dir); err != nil {
		return err
	}
	js.log.Info("relay: migrated the Badger database to JetStream", "spaces", n, "old files", filepath.Join(dir, badgerAside))
	return nil
}

func copyBadger(ctx context.Context, db *badger.DB, js *jsStore) (int, error) {
	spaces := 0
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			var err error
			switch {
			case len(k) == 1+SpaceIDLen && k[0] == 'm':
				err = copySpace(ctx, txn, js, string(k[1:]))
				spaces++
			case len(k) == 1+SpaceIDLen+8 && k[0] == 'e':
				err = copyEpoch(ctx, it.Item(), js, string(k[1:1+SpaceIDLen]), binary.BigEndian.Uint64(k[1+SpaceIDLen:]))
			case len(k) == 1 && k[0] == 'g':
				err = copyCount(ctx, it.Item(), js, subjGlobal)
			case len(k) == 1+32 && k[0] == 'c':
				err = copyCount(ctx, it.Item(), js, subjCreator+hex.EncodeToString(k[1:]))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return spaces, err
}

func copyEpoch(ctx context.Context, item *badger.Item, js *jsStore, space string, epoch uint64) error {
	v, err := item.ValueCopy(nil)
	if err != nil {
		return err
	}
	if _, err := js.publish(ctx, epochSubject(space, epoch), v, 0); err != nil && !wrongLast(err) {
		return err
	}
	return nil
}

func copyCount(ctx context.Context, item *badger.Item, js *jsStore, subject string) error {
	v, err := item.ValueCopy(nil)
	if err != nil || len(v) != 8 {
		return errors.Join(err, fmt.Errorf("corrupt counter"))
	}
	if _, err := js.publish(ctx, subject, v, 0); err != nil && !wrongLast(err) {
		return err
	}
	return nil
}

func copySpace(ctx context.Context, txn *badger.Txn, js *jsStore, space string) error {
	it, err := txn.Get(append([]byte("m"), space...))
	if err != nil {
		return err
	}
	raw, err := it.ValueCopy(nil)
	if err != nil {
		return err
	}
	var m jsMeta
	if err := wireDec.Unmarshal(raw, &m.M); err != nil {
		return fmt.Errorf("corrupt space metadata: %w", err)
	}
	prefix := append([]byte("b"), space...)
	bi := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	defer bi.Close()
	for bi.Rewind(); bi.ValidForPrefix(prefix); bi.Next() {
		key := bi.Item().Key()
		if len(key) != len(prefix)+8 {
			continue
		}
		seq := binary.BigEndian.Uint64(key[len(prefix):])
		if seq <= m.M.Low || seq > m.M.Head {
			continue // compacted in the metadata, not yet deleted
		}
		v, err := bi.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		if _, err := js.publish(ctx, bundleSubject(space, seq), v, 0); err != nil && !wrongLast(err) {
			return err
		}
	}
	// The duplicate ring: the last bundles of each sender that are live.
	for seq := m.M.Head; seq > m.M.Low && len(m.Recent) < recentPushes; seq-- {
		v, _, err := js.getBundle(ctx, space, seq, true)
		if err != nil || v == nil {
			return errors.Join(err, fmt.Errorf("bundle %d missing after the copy", seq))
		}
		var r jsMeta
		if err := r.apply(seq, v); err != nil {
			return err
		}
		m.Recent = append(r.Recent, m.Recent...)
	}
	if _, err := js.publish(ctx, subjMeta+space, marshal(&m), 0); err != nil && !wrongLast(err) {
		return err
	}
	return nil
}

// moveAside moves the Badger files (every regular file at the top of
// dir) into dir/badger-migrated.
func moveAside(dir string) error {
	aside := filepath.Join(dir, badgerAside)
	if err := os.MkdirAll(aside, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	// MANIFEST last: its presence is what says "not migrated yet".
	var manifest fs.DirEntry
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if e.Name() == "MANIFEST" {
			manifest = e
			continue
		}
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(aside, e.Name())); err != nil {
			return err
		}
	}
	if manifest != nil {
		return os.Rename(filepath.Join(dir, "MANIFEST"), filepath.Join(aside, "MANIFEST"))
	}
	return nil
}
