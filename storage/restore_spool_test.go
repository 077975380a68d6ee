package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
)

// batchCounter counts the Apply calls and the largest batch an Importer
// is handed.
type batchCounter struct {
	amImporter
	calls, largest, records int
}

func (b *batchCounter) Apply(ctx context.Context, recs []BackupRecord) (ImportStats, error) {
	b.calls++
	b.largest = max(b.largest, len(recs))
	b.records += len(recs)
	return b.amImporter.Apply(ctx, recs)
}

// TestImportStreamsThroughSpool: Import applies a backup of more records
// than a batch in batches, through a temporary file (sealed) that is gone
// when it returns, whether it succeeded, found the backup damaged (nothing
// applied), or could not create the spool (an error, not a bad backup).
func TestImportStreamsThroughSpool(t *testing.T) {
	ctx := context.Background()
	src := newMemStore(t)
	populate(t, src, importBatchRecords+40)
	backup := exportPass(t, src, "p")

	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dst := newMemStore(t)
	imp := &batchCounter{amImporter: amImporter{dst}}
	st, err := dst.Import(ctx, bytes.NewReader(backup), ImportOptions{Passphrase: []byte("p")}, imp)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != importBatchRecords+40 || imp.records != st.Records || imp.calls < 2 || imp.largest > importBatchRecords {
		t.Fatalf("stats %+v; %d records in %d calls, largest %d", st, imp.records, imp.calls, imp.largest)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("spool left behind: %v", left)
	}

	// A damaged backup: nothing applied, no spool left.
	bad := bytes.Clone(backup)
	bad[len(bad)-20] ^= 1
	imp2 := &batchCounter{amImporter: amImporter{newMemStore(t)}}
	if _, err := imp2.s.Import(ctx, bytes.NewReader(bad), ImportOptions{Passphrase: []byte("p")}, imp2); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("damaged backup: %v, want ErrBadBackup", err)
	}
	if imp2.calls != 0 {
		t.Fatalf("a damaged backup applied %d batches", imp2.calls)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("spool left behind after a damaged backup: %v", left)
	}

	// No place for the spool: an error that is not ErrBadBackup.
	t.Setenv("TMPDIR", tmp+"/missing")
	if _, err := dst.Import(ctx, bytes.NewReader(backup), ImportOptions{Passphrase: []byte("p")}, imp); err == nil || errors.Is(err, ErrBadBackup) {
		t.Fatalf("no spool: %v, want an error other than ErrBadBackup", err)
	}
}
