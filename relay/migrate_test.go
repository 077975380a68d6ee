package relay

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// migrationFixture is written beside the Badger database the fixture
// holds: what a test needs to talk to the space (keys of test-only
// identities, never used elsewhere).
type migrationFixture struct {
	SpaceKey []byte   `json:"space_key"`
	A        []byte   `json:"a"` // Ed25519 seeds
	B        []byte   `json:"b"`
	Acked    []string `json:"acked"`   // payloads b already received (compacted on a's side too)
	Pending  []string `json:"pending"` // payloads b has not received
}

const fixtureDir = "testdata/badger-relay-v1"

// The fixture relay/testdata/badger-relay-v1 was written by the Badger
// relay (commit "relay: migrate a Badger relay directory on first start",
// TestMakeBadgerFixture, run with ServerOptions.LegacyBadger before the
// Badger store was removed): space key and device seeds in fixture.json;
// a creates the space and adds b; a sends m1..m3, b receives them, both
// acknowledge (compacted: low 3); a sends m4, m5 (pending).

// A relay directory written by the Badger relay is migrated on first
// start: the space, its members, cursors, counters and pending bundles
// are there, the old files are moved aside, and a second start does not
// migrate again.
func TestMigrateBadgerRelay(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixtureDir, "fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx migrationFixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "relay")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtureDir, "db"))); err != nil {
		t.Fatal(err)
	}
	r := &testRelay{t: t, dir: dir, opts: ServerOptions{NoSync: true}}
	r.open()
	t.Cleanup(r.close)
	ka, kb := ed25519.NewKeyFromSeed(fx.A), ed25519.NewKeyFromSeed(fx.B)
	a := &device{key: ka, c: r.client(ka), kv: NewMemKV()}
	b := &device{key: kb, c: r.client(kb), kv: NewMemKV()}
	var key [SpaceKeySize]byte
	copy(key[:], fx.SpaceKey)
	space := SpaceFromKey(key, r.url)
	st, err := a.c.Status(t.Context(), space)
	if err != nil || st.Low != 3 || st.Head != 5 || st.Bundles != 2 || st.Members != 2 || st.Version != 2 {
		t.Fatalf("after migration: %+v %v", st, err)
	}
	// b pulls from where it acknowledged: the pending bundles, as sealed.
	page, err := b.c.PullPage(t.Context(), space, 3, 0)
	if err != nil || len(page.Envelopes) != len(fx.Pending) {
		t.Fatalf("pull after migration: %+v %v", page, err)
	}
	for i, e := range page.Envelopes {
		m, err := Open(space, e.Data)
		if err != nil || string(m.Payload) != fx.Pending[i] || e.Seq != uint64(4+i) {
			t.Fatalf("envelope %d: seq %d %q %v", i, e.Seq, m.Payload, err)
		}
	}
	// a's counter continues: 6 is next, 5 again is a duplicate.
	sealed, err := Seal(space, ka, 6, []byte("after migration"))
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := a.c.Push(t.Context(), space, sealed); err != nil || seq != 6 {
		t.Fatalf("push after migration: %d %v", seq, err)
	}
	other, _ := Seal(space, ka, 4, []byte("reused counter"))
	var ce *CounterError
	if _, err := a.c.Push(t.Context(), space, other); !errors.As(err, &ce) || ce.Expected != 7 {
		t.Fatalf("reused counter after migration: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Badger files left in place: %v", err)
	}
	old, err := os.ReadDir(filepath.Join(dir, badgerAside))
	if err != nil || !slices.ContainsFunc(old, func(e os.DirEntry) bool { return e.Name() == "MANIFEST" }) {
		t.Fatalf("Badger files not moved aside: %v", err)
	}
	r.restart()
	if st, err := a.c.Status(t.Context(), space); err != nil || st.Head != 6 {
		t.Fatalf("after restart: %+v %v", st, err)
	}
}

// A Badger directory that cannot be migrated is refused with one line
// that says what to do, and nothing is moved.
func TestMigrateRefusesUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("not a badger manifest"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewServer(dir, ServerOptions{NoSync: true})
	if err == nil || !strings.Contains(err.Error(), "move its files away") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("unreadable Badger dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatalf("MANIFEST moved: %v", err)
	}
}
