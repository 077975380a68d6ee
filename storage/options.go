package storage

import (
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
	if len(o.Passphrase) > 0 {
		return o.kdf().validate()
	}
	return nil
}
