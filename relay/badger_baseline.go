package relay

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// badgerStore is the relay's former store, one Badger database. It is
// kept only as the baseline of BenchmarkRelay10k (ServerOptions
// LegacyBadger) and goes once JetStream has been measured against it.
type badgerStore struct {
	db   *badger.DB
	opts ServerOptions
	log  *slog.Logger

	gcStop chan struct{}
	gcDone chan struct{}
	once   sync.Once
}

func openBadger(dir string, opts ServerOptions) (*badgerStore, error) {
	bo := badger.DefaultOptions(dir).
		WithLogger(nil).
		WithSyncWrites(!opts.NoSync).
		WithCompression(options.None). // bundles are ciphertext
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).
		WithBlockCacheSize(16 << 20).
		WithValueLogFileSize(256 << 20).
		WithValueThreshold(64 << 10)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("relay: open database: %w", err)
	}
	s := &badgerStore{db: db, opts: opts, log: opts.Logger, gcStop: make(chan struct{}), gcDone: make(chan struct{})}
	if opts.GCInterval > 0 {
		go s.gcLoop(opts.GCInterval)
	} else {
		close(s.gcDone)
	}
	return s, nil
}

func (s *badgerStore) gcLoop(every time.Duration) {
	defer close(s.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

func (s *badgerStore) close() error {
	var err error
	s.once.Do(func() {
		close(s.gcStop)
		<-s.gcDone
		if e := s.db.Close(); e != nil {
			err = fmt.Errorf("relay: close database: %w", e)
		}
	})
	return err
}
