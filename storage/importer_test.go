package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/automerge/automerge-go"
)

// Storage holds documents as opaque bytes; its tests bring the Automerge
// they need. amImporter is a test Importer with the merge Import did
// before replica took it over: Automerge merges the documents, and Deleted
// and Attrs come from the side with the later Updated.

func amHeads(hs []automerge.ChangeHash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		h := hs[i]
		out[i] = h[:]
	}
	return out
}

func amGuard[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, fmt.Errorf("automerge panicked: %v", r)
		}
	}()
	return f()
}

func amLoad(b []byte) (*automerge.Doc, error) {
	return amGuard(func() (*automerge.Doc, error) { return automerge.Load(b) })
}

func amCheck(rec *BackupRecord) error {
	_, err := amLoad(rec.Doc)
	return err
}

type amImporter struct{ s *Store }

func (a amImporter) Check(rec *BackupRecord) error { return amCheck(rec) }

func (a amImporter) Apply(ctx context.Context, recs []BackupRecord) (ImportStats, error) {
	for attempt := 0; ; attempt++ {
		var stats ImportStats
		var b Batch
		for i := range recs {
			w, kind, err := a.merge(ctx, &recs[i])
			if err != nil {
				return stats, err
			}
			switch kind {
			case 'c':
				stats.Created++
			case 'm':
				stats.Merged++
			default:
				stats.Unchanged++
			}
			if w != nil {
				b.Records = append(b.Records, *w)
			}
		}
		if len(b.Records) == 0 {
			return stats, nil
		}
		_, err := a.s.Write(ctx, b)
		if errors.Is(err, errStale) && attempt < maxAttempts {
			continue
		}
		return stats, err
	}
}

func (a amImporter) merge(ctx context.Context, rec *BackupRecord) (*RecordWrite, byte, error) {
	data, meta, err := a.s.Load(ctx, rec.Collection, rec.ID)
	if errors.Is(err, ErrNotFound) {
		d, err := amLoad(rec.Doc)
		if err != nil {
			return nil, 0, err
		}
		zero := uint64(0)
		doc := rec.Doc
		return &RecordWrite{Collection: rec.Collection, ID: rec.ID, Snapshot: func() ([]byte, error) { return doc, nil },
			Heads: amHeads(d.Heads()), Deleted: rec.Deleted, Attrs: rec.Attrs, Time: rec.Updated,
			created: rec.Created, ifSeq: &zero}, 'c', nil
	}
	if err != nil {
		return nil, 0, err
	}
	local, err := amLoad(data)
	if err != nil {
		return nil, 0, err
	}
	before := local.Heads()
	other, err := amLoad(rec.Doc)
	if err != nil {
		return nil, 0, err
	}
	if _, err := local.Merge(other); err != nil {
		return nil, 0, err
	}
	chs, err := local.Changes(before...)
	if err != nil {
		return nil, 0, err
	}
	newerMeta := rec.Updated.After(meta.Updated)
	if len(chs) == 0 && !newerMeta {
		return nil, 'u', nil
	}
	w := &RecordWrite{Collection: rec.Collection, ID: rec.ID, Heads: amHeads(local.Heads()),
		Deleted: meta.Deleted, Attrs: meta.Attrs, Time: meta.Updated, ifSeq: &meta.Seq}
	if len(chs) > 0 {
		w.Changes = automerge.SaveChanges(chs)
		snap := local.Save()
		w.Snapshot = func() ([]byte, error) { return snap, nil }
	}
	if newerMeta {
		w.Deleted, w.Attrs, w.Time = rec.Deleted, rec.Attrs, rec.Updated
	}
	if len(chs) == 0 {
		return w, 'u', nil
	}
	return w, 'm', nil
}
