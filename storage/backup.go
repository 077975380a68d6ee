package storage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"filippo.io/age"
	"github.com/dgraph-io/badger/v4"
	"github.com/fxamacker/cbor/v2"
)

// Backup format (see docs/storage.md): an age file whose payload is a CBOR
// sequence (RFC 8742) of maps with text keys, in core deterministic encoding:
//
//	{"k":"ferry-backup","v":1,"created":<unix ns>,"records":<n>,"slots":<m>}
//	{"k":"record","c":<collection>,"id":<id>,"created":<unix ns>,"updated":<unix ns>,
//	 "deleted":<bool>,"attrs":<bytes>,"doc":<Automerge document bytes>}   x n
//	   (doc is the record as stored: a saved document, possibly followed by
//	   incremental chunks; Automerge loads the concatenation)
//	{"k":"slot","ns":<namespace>,"key":<key>,"value":<bytes>}              x m
//	{"k":"end","items":<n+m+1>,"sha256":<SHA-256 of every preceding item's bytes>}
const (
	backupKind    = "ferry-backup"
	backupVersion = 1
	// DefaultMaxImportBytes bounds the decrypted size Import stages in memory.
	DefaultMaxImportBytes = 1 << 30
)

type bkHeader struct {
	K       string `cbor:"k"`
	V       uint64 `cbor:"v"`
	Created int64  `cbor:"created"`
	Records uint64 `cbor:"records"`
	Slots   uint64 `cbor:"slots"`
}

type bkRecord struct {
	K       string `cbor:"k"`
	C       string `cbor:"c"`
	ID      string `cbor:"id"`
	Created int64  `cbor:"created"`
	Updated int64  `cbor:"updated"`
	Deleted bool   `cbor:"deleted"`
	Attrs   []byte `cbor:"attrs"`
	Doc     []byte `cbor:"doc"`
}

type bkSlot struct {
	K     string `cbor:"k"`
	NS    string `cbor:"ns"`
	Key   string `cbor:"key"`
	Value []byte `cbor:"value"`
}

type bkTrailer struct {
	K      string `cbor:"k"`
	Items  uint64 `cbor:"items"`
	SHA256 []byte `cbor:"sha256"`
}

type bkPeek struct {
	K string `cbor:"k"`
}

var (
	bkEnc    cbor.EncMode
	bkDec    cbor.DecMode
	bkDecAny cbor.DecMode
)

func init() {
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty
	var err error
	if bkEnc, err = eo.EncMode(); err != nil {
		panic(err)
	}
	do := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}
	if bkDec, err = do.DecMode(); err != nil {
		panic(err)
	}
	do.ExtraReturnErrors = cbor.ExtraDecErrorNone
	if bkDecAny, err = do.DecMode(); err != nil {
		panic(err)
	}
}

// ExportOptions choose who can open a backup and what goes in it.
type ExportOptions struct {
	// Passphrase encrypts with an age scrypt recipient (age -d asks for it),
	// normalized to Unicode NFC first (an ASCII passphrase is unchanged).
	Passphrase []byte
	// Recipients (e.g. age X25519 recipients) encrypt to keys instead. age
	// does not allow mixing a passphrase with other recipients.
	Recipients []age.Recipient
	// Namespaces lists the slot namespaces to include. Device-specific ones
	// (identity, per-peer cursors) are for the caller to leave out.
	Namespaces []string
	// ScryptWorkFactor is log2(N) for a passphrase backup; 0 => age's
	// default (18). Lower values are for tests only.
	ScryptWorkFactor int
}

// ExportStats reports what Export wrote.
type ExportStats struct {
	Records, Slots int
	Bytes          int64 // size of the age file
}

// ImportOptions open a backup.
type ImportOptions struct {
	Passphrase []byte
	Identities []age.Identity
	// MaxBytes bounds the decrypted backup, which is verified whole before
	// anything is written (its plaintext spooled, sealed to a key held in
	// memory, to a file of os.TempDir, not to memory); 0 =>
	// DefaultMaxImportBytes.
	MaxBytes int64
}

// ImportStats reports what Import did.
type ImportStats struct {
	Records      int // records in the backup
	Created      int // records that did not exist
	Merged       int // existing records that changed by the merge
	Unchanged    int // existing records the backup added nothing to
	Conflicts    int // conflicts the merge found (as the Importer counts them)
	Slots        int // slots written (absent before)
	SlotsSkipped int // slots left alone because they existed
}

// BackupRecord is one record of a verified backup. Doc holds the record's
// Automerge bytes as they were stored (opaque to storage); the times are
// the exporting device's.
type BackupRecord struct {
	Collection, ID   string
	Created, Updated time.Time
	Deleted          bool
	Attrs            []byte
	Doc              []byte
}

// An Importer merges a backup's records into the store: storage verifies
// the file (age authentication, CBOR framing, the trailer's count and hash,
// names and sizes) but does not parse documents.
type Importer interface {
	// Check is called for every record while the backup is verified,
	// before anything is written; an error refuses the whole import as
	// ErrBadBackup.
	Check(rec *BackupRecord) error
	// Apply merges a batch of verified records (in backup order) and
	// reports what it did in Created, Merged, Unchanged and Conflicts.
	Apply(ctx context.Context, recs []BackupRecord) (ImportStats, error)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Export writes an age-encrypted backup of every record and of the slots in
// opts.Namespaces, from one consistent snapshot.
func (s *Store) Export(ctx context.Context, w io.Writer, opts ExportOptions) (ExportStats, error) {
	var rcpts []age.Recipient
	switch {
	case len(opts.Passphrase) > 0 && len(opts.Recipients) > 0:
		return ExportStats{}, invalidf("age cannot mix a passphrase with recipients")
	case len(opts.Passphrase) > 0:
		r, err := age.NewScryptRecipient(string(normalizePassphrase(opts.Passphrase)))
		if err != nil {
			return ExportStats{}, invalidf("backup passphrase")
		}
		if opts.ScryptWorkFactor > 0 {
			r.SetWorkFactor(opts.ScryptWorkFactor)
		}
		rcpts = []age.Recipient{r}
	case len(opts.Recipients) > 0:
		rcpts = opts.Recipients
	default:
		return ExportStats{}, invalidf("set Passphrase or Recipients")
	}
	for _, ns := range opts.Namespaces {
		if err := checkName("namespace", ns); err != nil {
			return ExportStats{}, err
		}
	}
	var stats ExportStats
	cw := &countWriter{w: w}
	err := s.view(ctx, "export", func(txn *badger.Txn, st *keyState) error {
		stats = ExportStats{}
		// Pass 1: counts for the header.
		nrec, nslot := 0, 0
		if err := s.eachRecord(ctx, txn, st, func(*epochKeys, []byte, *metaRec) error { nrec++; return nil }); err != nil {
			return err
		}
		for _, ns := range opts.Namespaces {
			if err := eachSlot(txn, st, ns, func(*slotVal) error { nslot++; return nil }); err != nil {
				return err
			}
		}
		aw, err := age.Encrypt(cw, rcpts...)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		h := sha256.New()
		items := uint64(0)
		emit := func(v any) error {
			b, err := bkEnc.Marshal(v)
			if err != nil {
				return err
			}
			h.Write(b)
			items++
			_, err = aw.Write(b)
			return err
		}
		if err := emit(bkHeader{K: backupKind, V: backupVersion, Created: s.now().UnixNano(),
			Records: uint64(nrec), Slots: uint64(nslot)}); err != nil {
			return err
		}
		err = s.eachRecord(ctx, txn, st, func(ek *epochKeys, rid []byte, m *metaRec) error {
			doc, err := readChunks(txn, ek, rid, m, nil)
			if err != nil {
				return err
			}
			stats.Records++
			return emit(bkRecord{K: "record", C: m.coll, ID: m.id, Created: m.created, Updated: m.updated,
				Deleted: m.deleted, Attrs: m.attrs, Doc: doc})
		})
		if err != nil {
			return err
		}
		for _, ns := range opts.Namespaces {
			err := eachSlot(txn, st, ns, func(v *slotVal) error {
				stats.Slots++
				return emit(bkSlot{K: "slot", NS: v.ns, Key: v.key, Value: v.value})
			})
			if err != nil {
				return err
			}
		}
		if stats.Records != nrec || stats.Slots != nslot {
			return corruptf("export counts")
		}
		b, err := bkEnc.Marshal(bkTrailer{K: "end", Items: items, SHA256: h.Sum(nil)})
		if err != nil {
			return err
		}
		if _, err := aw.Write(b); err != nil {
			return err
		}
		return aw.Close()
	})
	stats.Bytes = cw.n
	if err != nil {
		return stats, err
	}
	return stats, nil
}

// eachRecord visits every record (all collections) with its verified meta.
func (s *Store) eachRecord(ctx context.Context, txn *badger.Txn, st *keyState, fn func(ek *epochKeys, rid []byte, m *metaRec) error) error {
	n := 0
	for _, mp := range s.metaPrefixes(st, "") {
		ek, prefix := mp.ek, mp.prefix
		var keys [][]byte
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
		for _, k := range keys {
			if n++; n%ctxCheckEvery == 0 {
				if err := s.alive(ctx); err != nil {
					return err
				}
			}
			raw, ok, err := getValue(txn, k)
			if err != nil {
				return err
			}
			if !ok {
				return corruptf("record meta")
			}
			m, nonce, err := openMeta(ek, k, raw)
			if err != nil {
				return err
			}
			rid := ek.recID(m.coll, m.id)
			if !bytes.Equal(k, mp.key(m)) {
				return corruptf("record meta")
			}
			if err := verifyFeedLink(txn, ek, m, nonce); err != nil {
				return err
			}
			if err := fn(ek, rid, m); err != nil {
				return err
			}
		}
	}
	return nil
}

func eachSlot(txn *badger.Txn, st *keyState, ns string, fn func(*slotVal) error) error {
	for _, ek := range st.reads() {
		prefix := ek.slotPrefix(ns)
		var keys [][]byte
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
		for _, k := range keys {
			v, err := readSlot(txn, ek, k, ns, "")
			if err != nil {
				return err
			}
			if v == nil || !bytes.Equal(k, ek.slotKey(ns, v.key)) {
				return corruptf("slot")
			}
			if err := fn(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// staged is a fully verified backup, held in memory.
type staged struct {
	hdr     bkHeader
	records []BackupRecord
	slots   []bkSlot
}

func badBackup(what string) error { return fmt.Errorf("%s: %w", what, ErrBadBackup) }

// openBackup decrypts a backup (age). When no identity opens it (age's
// NoIdentityMatchError: a wrong passphrase or key) it is ErrWrongKey;
// every other failure is ErrBadBackup (as are those of scanBackup: age
// authentication, truncation, trailer, item validation, size).
// byPassphrase tells whether ids are the passphrase's, for the message.
func openBackup(r io.Reader, ids []age.Identity, byPassphrase bool) (io.Reader, error) {
	ar, err := age.Decrypt(r, ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if !errors.As(err, &nm) {
			return nil, badBackup("decrypt backup")
		}
		scrypt := slices.Contains(nm.StanzaTypes, "scrypt")
		switch {
		case byPassphrase && !scrypt:
			return nil, fmt.Errorf("backup is encrypted to age recipients, not a passphrase: give its identity: %w", ErrWrongKey)
		case !byPassphrase && scrypt:
			return nil, fmt.Errorf("backup is encrypted with a passphrase, not to a recipient: %w", ErrWrongKey)
		case byPassphrase:
			return nil, fmt.Errorf("backup passphrase does not open it: %w", ErrWrongKey)
		}
		return nil, fmt.Errorf("no identity given opens the backup: %w", ErrWrongKey)
	}
	return ar, nil
}

// readBackupStream verifies a decrypted backup stream and stages it whole.
func readBackupStream(r io.Reader, maxBytes int64, check func(*BackupRecord) error) (*staged, error) {
	st := &staged{}
	hdr, err := scanBackup(r, maxBytes, check,
		func(br BackupRecord) error { st.records = append(st.records, br); return nil },
		func(sl bkSlot) error { st.slots = append(st.slots, sl); return nil })
	if err != nil {
		return nil, err
	}
	st.hdr = hdr
	return st, nil
}

// scanBackup decodes and verifies a decrypted backup stream (framing,
// names and sizes, check on every record, the trailer's count and hash),
// handing each record and slot to onRecord and onSlot as it is read (nil:
// dropped), and returns its header. Verification errors are ErrBadBackup;
// an error from onRecord or onSlot is returned as is. Only the seen names
// are held, not the items.
func scanBackup(r io.Reader, maxBytes int64, check func(*BackupRecord) error,
	onRecord func(BackupRecord) error, onSlot func(bkSlot) error) (bkHeader, error) {
	lr := &io.LimitedReader{R: r, N: maxBytes + 1}
	dec := bkDec.NewDecoder(lr)
	h := sha256.New()
	st := &struct{ hdr bkHeader }{}
	var nrec, nslot uint64
	items := uint64(0)
	seenRec := map[[2]string]bool{}
	seenSlot := map[[2]string]bool{}
	for {
		var raw cbor.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if lr.N <= 0 {
				return bkHeader{}, badBackup("backup larger than MaxBytes")
			}
			return bkHeader{}, badBackup("read backup")
		}
		var peek bkPeek
		if err := bkDecAny.Unmarshal(raw, &peek); err != nil {
			return bkHeader{}, badBackup("backup item")
		}
		if items == 0 && peek.K != backupKind {
			return bkHeader{}, badBackup("backup header")
		}
		switch peek.K {
		case backupKind:
			if items != 0 {
				return bkHeader{}, badBackup("backup header")
			}
			if err := bkDec.Unmarshal(raw, &st.hdr); err != nil || st.hdr.V != backupVersion {
				return bkHeader{}, badBackup("backup header")
			}
		case "record":
			var rec bkRecord
			if err := bkDec.Unmarshal(raw, &rec); err != nil {
				return bkHeader{}, badBackup("backup record")
			}
			if err := validateBackupRecord(&rec); err != nil {
				return bkHeader{}, err
			}
			k := [2]string{rec.C, rec.ID}
			if seenRec[k] || nrec >= st.hdr.Records {
				return bkHeader{}, badBackup("backup record")
			}
			seenRec[k] = true
			br := BackupRecord{Collection: rec.C, ID: rec.ID, Created: unixNano(rec.Created), Updated: unixNano(rec.Updated),
				Deleted: rec.Deleted, Attrs: rec.Attrs, Doc: rec.Doc}
			if check != nil {
				if err := check(&br); err != nil {
					return bkHeader{}, fmt.Errorf("backup record %s/%s: %w: %w", rec.C, rec.ID, ErrBadBackup, err)
				}
			}
			nrec++
			if onRecord != nil {
				if err := onRecord(br); err != nil {
					return bkHeader{}, err
				}
			}
		case "slot":
			var sl bkSlot
			if err := bkDec.Unmarshal(raw, &sl); err != nil {
				return bkHeader{}, badBackup("backup slot")
			}
			k := [2]string{sl.NS, sl.Key}
			if checkName("ns", sl.NS) != nil || checkSlotKey(sl.Key) != nil || len(sl.Value) > maxValueLen ||
				seenSlot[k] || nslot >= st.hdr.Slots {
				return bkHeader{}, badBackup("backup slot")
			}
			seenSlot[k] = true
			nslot++
			if onSlot != nil {
				if err := onSlot(sl); err != nil {
					return bkHeader{}, err
				}
			}
		case "end":
			var tr bkTrailer
			if err := bkDec.Unmarshal(raw, &tr); err != nil {
				return bkHeader{}, badBackup("backup trailer")
			}
			if tr.Items != items || !bytes.Equal(tr.SHA256, h.Sum(nil)) ||
				nrec != st.hdr.Records || nslot != st.hdr.Slots {
				return bkHeader{}, badBackup("backup trailer")
			}
			// Nothing may follow, and reading to EOF lets age authenticate
			// the final chunk.
			var extra cbor.RawMessage
			if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
				return bkHeader{}, badBackup("data after backup trailer")
			}
			if lr.N <= 0 {
				return bkHeader{}, badBackup("backup larger than MaxBytes")
			}
			return st.hdr, nil
		default:
			return bkHeader{}, badBackup("backup item kind")
		}
		h.Write(raw)
		items++
	}
}

func validateBackupRecord(rec *bkRecord) error {
	if checkName("c", rec.C) != nil || checkName("id", rec.ID) != nil || len(rec.Attrs) > maxAttrsLen ||
		len(rec.Doc) == 0 || len(rec.Doc) > maxValueLen {
		return badBackup("backup record")
	}
	return nil
}

const (
	importBatchRecords = 128
	// importBatchBytes keeps a batch of documents, which an apply may store
	// as snapshot and changes, under Badger's cap of one transaction (15% of
	// the 8 MiB default memtable: 1.2 MiB).
	importBatchBytes = 256 << 10
	importBatchSlots = 256
)

// Import reads and verifies the whole backup (age authentication, trailer
// count and hash, names and sizes, and imp.Check on every record) before
// writing anything; a bad backup is ErrBadBackup, a wrong passphrase or
// identity ErrWrongKey, and either leaves the store unchanged. A passphrase
// is tried in its NFC form, then (for backups made before normalization) as
// given and in NFD: a wrong non-ASCII passphrase may cost up to three
// scrypt runs. It then hands the records to imp.Apply in batches (up to
// 128 records or 256 KiB of documents each; storage does not merge
// documents itself) and writes each slot only if absent. Memory holds a
// batch, not the backup: between the two passes the verified plaintext
// waits in a temporary file of os.TempDir, sealed with age to a key held
// only in memory (a full file system there is ErrNoSpace). A nil imp is
// ErrInvalid. An interrupted import leaves some batches applied; running it
// again is harmless when Apply merges.
func (s *Store) Import(ctx context.Context, r io.Reader, opts ImportOptions, imp Importer) (ImportStats, error) {
	if imp == nil {
		return ImportStats{}, invalidf("import needs an Importer")
	}
	ids := append([]age.Identity(nil), opts.Identities...)
	if len(opts.Passphrase) > 0 {
		// Backups made before passphrases were normalized used the bytes
		// as typed: try the NFC form, then those (see passphrase.go).
		for _, p := range passphraseCandidates(opts.Passphrase, true) {
			id, err := age.NewScryptIdentity(string(p))
			if err != nil {
				return ImportStats{}, invalidf("backup passphrase")
			}
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return ImportStats{}, invalidf("set Passphrase or Identities")
	}
	maxBytes := opts.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxImportBytes
	}
	if err := s.alive(ctx); err != nil {
		return ImportStats{}, err
	}
	// Pass 1 verifies the whole backup while spooling its plaintext,
	// sealed to a key that lives only in this call, to a temporary file;
	// pass 2 reads the spool back and applies it batch by batch. Neither
	// holds more than a batch of records.
	ar, err := openBackup(r, ids, len(opts.Passphrase) > 0)
	if err != nil {
		return ImportStats{}, err
	}
	spool, err := newSpool()
	if err != nil {
		return ImportStats{}, spoolErr(err)
	}
	defer spool.remove()
	if _, err := scanBackup(io.TeeReader(ar, spool), maxBytes, imp.Check, nil, nil); err != nil {
		if spool.err != nil {
			return ImportStats{}, spoolErr(spool.err) // not the backup's fault
		}
		return ImportStats{}, err
	}
	pr, err := spool.reader()
	if err != nil {
		return ImportStats{}, spoolErr(err)
	}
	var (
		stats ImportStats
		batch []BackupRecord
		size  int
		slots []bkSlot
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.alive(ctx); err != nil {
			return err
		}
		bs, err := imp.Apply(ctx, batch)
		stats.Created += bs.Created
		stats.Merged += bs.Merged
		stats.Unchanged += bs.Unchanged
		stats.Conflicts += bs.Conflicts
		batch, size = nil, 0
		return err
	}
	_, err = scanBackup(pr, maxBytes, nil, func(br BackupRecord) error {
		stats.Records++
		batch = append(batch, br)
		size += len(br.Doc)
		if len(batch) >= importBatchRecords || size >= importBatchBytes {
			return flush()
		}
		return nil
	}, func(sl bkSlot) error { slots = append(slots, sl); return nil })
	if err == nil {
		err = flush()
	}
	if err != nil {
		return stats, err
	}
	st := &staged{slots: slots}
	for i := 0; i < len(st.slots); i += importBatchSlots {
		part := st.slots[i:min(i+importBatchSlots, len(st.slots))]
		wrote := make([]bool, len(part))
		b := Batch{}
		for k, sl := range part {
			b.Slots = append(b.Slots, SlotWrite{Namespace: sl.NS, Key: sl.Key, Value: sl.Value, ifAbsent: true, wrote: &wrote[k]})
		}
		if _, err := s.Write(ctx, b); err != nil {
			return stats, err
		}
		for _, w := range wrote {
			if w {
				stats.Slots++
			} else {
				stats.SlotsSkipped++
			}
		}
	}
	return stats, nil
}

// spool is Import's temporary copy of a verified backup's plaintext,
// sealed with age to an X25519 identity held only in memory, in a file
// of os.TempDir removed when the import ends.
type spool struct {
	f   *os.File
	bw  *bufio.Writer
	w   io.WriteCloser // age's writer over bw
	id  *age.X25519Identity
	err error // the first write error
}

// Write writes to the spool, keeping the first error: a full disk must
// not read as a damaged backup.
func (sp *spool) Write(p []byte) (int, error) {
	n, err := sp.w.Write(p)
	if err != nil && sp.err == nil {
		sp.err = err
	}
	return n, err
}

// spoolErr classifies a failure of the spool: ErrNoSpace on a full file
// system.
func spoolErr(err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("import: temporary copy of the backup: %w: %w", ErrNoSpace, err)
	}
	return fmt.Errorf("import: temporary copy of the backup: %w", err)
}

func newSpool() (*spool, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "ferry-restore-*")
	if err != nil {
		return nil, err
	}
	sp := &spool{f: f, bw: bufio.NewWriterSize(f, 64<<10), id: id}
	if sp.w, err = age.Encrypt(sp.bw, id.Recipient()); err != nil {
		sp.remove()
		return nil, err
	}
	return sp, nil
}

// reader finishes the spool and returns its plaintext from the start.
func (sp *spool) reader() (io.Reader, error) {
	if err := sp.w.Close(); err != nil {
		return nil, err
	}
	if err := sp.bw.Flush(); err != nil {
		return nil, err
	}
	if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return age.Decrypt(bufio.NewReaderSize(sp.f, 64<<10), sp.id)
}

func (sp *spool) remove() {
	sp.f.Close()
	os.Remove(sp.f.Name())
}
