package storage

import (
	"math"
	"runtime/debug"
	"time"
)

// KDFParams are Argon2id parameters.
type KDFParams struct {
	Time      uint32 // passes
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // parallelism
}

// DefaultKDF is the production preset: t=3, 64 MiB, p=4.
func DefaultKDF() KDFParams { return KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4} }

// TestKDF is a cheap preset for tests (t=1, 64 KiB, p=1). Never use it for
// real data: it offers almost no resistance to guessing.
func TestKDF() KDFParams { return KDFParams{Time: 1, MemoryKiB: 64, Threads: 1} }

// Bounds on KDF parameters accepted from callers and from disk, so a
// tampered header cannot make Open allocate unbounded memory or spin.
const (
	maxKDFTime   = 64
	maxKDFMemKiB = 4 << 20 // 4 GiB
)

func (p KDFParams) validate() error {
	if p.Time < 1 || p.Time > maxKDFTime {
		return invalidf("kdf time %d out of range [1,%d]", p.Time, maxKDFTime)
	}
	if p.Threads < 1 {
		return invalidf("kdf threads must be >= 1")
	}
	if p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemKiB {
		return invalidf("kdf memory %d KiB out of range [8*threads,%d]", p.MemoryKiB, maxKDFMemKiB)
	}
	return nil
}

// Options configure Create and Open. Exactly one of Passphrase and Key must be
// set. The zero value of every other field is meaningful.
type Options struct {
	// Passphrase is stretched with Argon2id into the key-encryption key.
	Passphrase []byte
	// Key is a raw 32-byte key (e.g. from an OS keychain), used directly as
	// the key-encryption key; Argon2 is skipped.
	Key []byte
	// KDF parameters for Create and ChangePassphrase; zero => DefaultKDF().
	// Open reads them from the store header.
	KDF KDFParams
	// InMemory runs Badger in memory (dir is ignored): for tests. Only Create
	// makes sense with it; the store vanishes on Close.
	InMemory bool
	// NoSync turns Badger's SyncWrites off. By default an acknowledged write
	// survives kill -9 and power loss.
	NoSync bool
	// Now is the clock for Created/Updated; nil => time.Now.
	Now func() time.Time

	// Sizes are Badger's sizes (zero fields: DefaultSizes).
	Sizes
}

// Sizes are Badger's sizes, in bytes (NumMemtables is a count). A zero
// field means ferry's embedded default (DefaultSizes), sized for a phone
// rather than a server. They also set the free space a store keeps in
// reserve before it refuses writes with ErrNoSpace (Reserve; docs/storage.md).
type Sizes struct {
	// MemTableSize is the size of one memtable and of its write-ahead log
	// (*.mem, up to 2x on disk, memory-mapped); [1 MiB, 1 GiB].
	MemTableSize int64
	// NumMemtables is how many memtables may be in memory at once,
	// including those waiting to be flushed; [1, 16].
	NumMemtables int
	// ValueLogFileSize is the size at which a value-log file (*.vlog,
	// holding the values of at least ValueThreshold) is rotated;
	// [1 MiB, 1 GiB].
	ValueLogFileSize int64
	// BlockCacheSize is the in-memory cache of table blocks; [1 MiB, 16 GiB].
	BlockCacheSize int64
	// IndexCacheSize bounds the memory used by table indexes and Bloom
	// filters; zero keeps them all in memory (Badger's default); at most 16 GiB.
	IndexCacheSize int64
	// BaseTableSize is the size of the tables Badger writes by compaction;
	// [256 KiB, 1 GiB].
	BaseTableSize int64
	// ValueThreshold: a value of at least this many bytes goes to the
	// value log, a smaller one stays in the LSM tree with its key (the
	// key-value separation of WiscKey, Lu et al., FAST 2016, which Badger
	// implements): compactions then move keys and value pointers, not
	// documents. Zero means 1 KiB: a record's meta (List and the
	// reconciliation scan it) stays in the LSM tree, a document of 1 KiB
	// or more goes to the value log (docs/storage.md, "Where values
	// live"); [1 KiB, min(1 MiB, 15% of MemTableSize)] (Badger requires
	// it to fit in one batch).
	ValueThreshold int64
	// MappedTrimInterval is how often the store checks how much of its
	// memory-mapped tables, value-log files and write-ahead logs is
	// resident and, above MappedBudget, asks the kernel to take pages out
	// of the process's resident memory (Linux: madvise MADV_PAGEOUT; a
	// no-op elsewhere; docs/storage.md, "Memory"). Zero means the
	// default, which like MappedBudget's depends on the process: 50 ms
	// (DefaultSizes) where a Go memory limit is in force when the store
	// opens, 250 ms where none is. A scan reads the value log about 200
	// MiB/s into the resident set (each read fault maps up to 16 cached
	// pages around the one it needs, whatever the random-read advice), so
	// the interval, not the budget, sets the peak: measured at 100,000
	// records, a reopen and scan peaked at 111 MiB with 250 ms and 79 MiB
	// with 50 ms (49 s either way; alone, 25.9 s against 28.6 s: pages
	// read again come back from the disk). From before Badger opens the
	// store until Create or Open returns (a resumed key rotation
	// included), and while a value-log GC round or the full-disk recovery
	// reopens Badger, the trim runs every 10 ms whatever this interval.
	// Negative turns it off (that one too), and resident memory then grows
	// with the data a process writes or reads, up to the store's size on
	// disk.
	MappedTrimInterval time.Duration
	// MappedBudget is how much of the store's own memory-mapped files
	// (tables beyond their indexes, value-log files, write-ahead logs;
	// bytes resident, per store) may stay resident: above it, a trim
	// pages out the largest mappings until at most half of it stays;
	// at or below it nothing is paged out, so only a store over it pays
	// for paging out and for reading the pages back. Zero means the
	// default, which depends on the process: 16 MiB (DefaultSizes) where
	// a Go memory limit is in force when the store opens (GOMEMLIMIT,
	// runtime/debug.SetMemoryLimit, replica.Options.MemoryLimit: the
	// application asked for a small footprint), 32 MiB where none is
	// (measured on the initial sync of 100,000 records: 26-28 s against
	// 29-33 s with 16 MiB, docs/storage.md "Memory"); negative pages
	// everything out at every interval.
	MappedBudget int64
	// ValueLogGCInterval is how often a writable on-disk store checks
	// whether to collect the value log's garbage (docs/storage.md,
	// "Value-log garbage collection"). A round with work (this
	// process's writes have deleted or overwritten at least 2 x
	// ValueLogFileSize of value-log values since the last one, counted
	// at commit; or a key rotation has finished) holds the store while it runs: operations wait while
	// it closes and reopens Badger, compacts the LSM tree into one level
	// and rewrites up to 8 value-log files that are at least half
	// garbage (measured: about 0.6 s and 0.5 CPU-seconds a round for
	// 10,000 records of 3 KiB). It needs the tree's size plus 2 x
	// ValueLogFileSize free beyond the write reserve, else it waits for
	// a later round. A round without work lists the store's directory.
	// Zero means the default (DefaultSizes: 1 minute); negative turns it
	// off, and the value log then keeps every value ever overwritten or
	// deleted; a positive interval is in [1 ms, 24 h].
	ValueLogGCInterval time.Duration
}

// unlimitedMappedBudget and unlimitedTrimInterval are the MappedBudget
// and MappedTrimInterval of zero fields in a process without a Go memory
// limit (Sizes).
const (
	unlimitedMappedBudget = 32 << 20
	unlimitedTrimInterval = 250 * time.Millisecond
)

// DefaultSizes returns the Badger sizes ferry uses for every zero size
// field: 8 MiB memtables, 2 of them, 32 MiB value-log files, an 8 MiB
// block cache, indexes kept in memory, 2 MiB tables, values of 1 KiB or
// more in the value log, a 16 MiB budget of resident mapped files checked
// every 50 ms (zero MappedBudget and MappedTrimInterval fields are 32 MiB
// and 250 ms in a process without a Go memory limit).
// Sized for a phone: Badger held 40-60 MiB of memory besides the indexes
// at the measured peaks (docs/storage.md).
func DefaultSizes() Sizes {
	return Sizes{MemTableSize: 8 << 20, NumMemtables: 2, ValueLogFileSize: 32 << 20,
		BlockCacheSize: 8 << 20, IndexCacheSize: 0, BaseTableSize: 2 << 20,
		ValueThreshold: 1 << 10, MappedTrimInterval: 50 * time.Millisecond, MappedBudget: 16 << 20,
		ValueLogGCInterval: time.Minute}
}

// ServerSizes is the preset for a store that should favour throughput over
// footprint (a server, a desktop syncing large stores): 64 MiB memtables,
// 3 of them, 256 MiB value-log files, a 256 MiB block cache, indexes kept
// in memory, 8 MiB tables, values of 1 KiB or more in the value log
// (Badger's own defaults but for fewer memtables, smaller value-log files
// and ferry's value threshold). Badger then holds up to about 730 MiB of memory besides the
// indexes, and the store keeps 97 MiB of disk free (Reserve), against
// about 53 MiB and 15 MiB with DefaultSizes (docs/storage.md).
func ServerSizes() Sizes {
	return Sizes{MemTableSize: 64 << 20, NumMemtables: 3, ValueLogFileSize: 256 << 20,
		BlockCacheSize: 256 << 20, IndexCacheSize: 0, BaseTableSize: 8 << 20,
		ValueThreshold: 1 << 10, MappedTrimInterval: 250 * time.Millisecond, MappedBudget: 40 << 20,
		ValueLogGCInterval: time.Minute}
}

// sizes returns o's sizes with zero fields set to DefaultSizes.
func (o *Options) sizes() Sizes {
	d := DefaultSizes()
	r := o.Sizes
	if r.MemTableSize == 0 {
		r.MemTableSize = d.MemTableSize
	}
	if r.NumMemtables == 0 {
		r.NumMemtables = d.NumMemtables
	}
	if r.ValueLogFileSize == 0 {
		r.ValueLogFileSize = d.ValueLogFileSize
	}
	if r.BlockCacheSize == 0 {
		r.BlockCacheSize = d.BlockCacheSize
	}
	if r.BaseTableSize == 0 {
		r.BaseTableSize = d.BaseTableSize
	}
	if r.ValueThreshold == 0 {
		r.ValueThreshold = d.ValueThreshold
	}
	// internal/memlimit.InForce's rule, written out: storage imports
	// nothing of ferry (TestImportsNothingOfFerry).
	unlimited := debug.SetMemoryLimit(-1) == math.MaxInt64
	if r.MappedTrimInterval == 0 {
		r.MappedTrimInterval = d.MappedTrimInterval
		if unlimited {
			r.MappedTrimInterval = unlimitedTrimInterval
		}
	}
	if r.MappedBudget == 0 {
		r.MappedBudget = d.MappedBudget
		if unlimited {
			r.MappedBudget = unlimitedMappedBudget
		}
	}
	if r.ValueLogGCInterval == 0 {
		r.ValueLogGCInterval = d.ValueLogGCInterval
	}
	return r
}

func (o *Options) validateSizes() error {
	z := o.sizes()
	in := func(name string, v, lo, hi int64) error {
		if v < lo || v > hi {
			return invalidf("%s %d out of range [%d,%d]", name, v, lo, hi)
		}
		return nil
	}
	for _, c := range []struct {
		name      string
		v, lo, hi int64
	}{
		{"MemTableSize", z.MemTableSize, 1 << 20, 1 << 30},
		{"NumMemtables", int64(z.NumMemtables), 1, 16},
		{"ValueLogFileSize", z.ValueLogFileSize, 1 << 20, 1 << 30},
		{"BlockCacheSize", z.BlockCacheSize, 1 << 20, 16 << 30},
		{"IndexCacheSize", z.IndexCacheSize, 0, 16 << 30},
		{"BaseTableSize", z.BaseTableSize, 256 << 10, 1 << 30},
		{"ValueThreshold", z.ValueThreshold, 1 << 10, min(1<<20, z.MemTableSize*15/100)},
	} {
		if err := in(c.name, c.v, c.lo, c.hi); err != nil {
			return err
		}
	}
	if iv := z.ValueLogGCInterval; iv > 0 && (iv < time.Millisecond || iv > 24*time.Hour) {
		return invalidf("ValueLogGCInterval %v out of range [1ms,24h] (negative: off)", iv)
	}
	return nil
}

func (o *Options) validateSecret() error {
	hasP, hasK := len(o.Passphrase) > 0, o.Key != nil
	switch {
	case hasP && hasK:
		return invalidf("set only one of Passphrase and Key")
	case !hasP && !hasK:
		return invalidf("set Passphrase or Key")
	case hasK && len(o.Key) != keySize:
		return invalidf("key must be %d bytes", keySize)
	}
	return nil
}

func (o *Options) kdf() KDFParams {
	if o.KDF == (KDFParams{}) {
		return DefaultKDF()
	}
	return o.KDF
}

func (o *Options) validate() error {
	if err := o.validateSecret(); err != nil {
		return err
	}
	if err := o.validateSizes(); err != nil {
		return err
	}
	if len(o.Passphrase) > 0 {
		return o.kdf().validate()
	}
	return nil
}
