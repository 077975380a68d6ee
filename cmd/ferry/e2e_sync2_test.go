package main

// Issue 13's examples through the real binary: three devices that meet in
// a line and then directly, a store restored from an older copy of itself,
// and a delta that travels A -> B -> C. Every sync is `ferry sync` against
// `ferry serve` over loopback TLS; the data is written in-process (a few
// hundred records would take a process each otherwise).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/replica"
)

// sync2Records is the number of records of the three-device tests.
const sync2Records = 300

// sessionStats is one `ferry sync --json` (the dialing side's SyncStats)
// and the serving side's session line.
type sessionStats struct {
	Sent, Received           int
	BytesSent, BytesReceived int64
	ServerSent, ServerRecv   int
	ServerLine               string
}

func (s sessionStats) moved() int { return s.Sent + s.Received + s.ServerSent + s.ServerRecv }

func (s sessionStats) String() string {
	return fmt.Sprintf("sent %d received %d records, %d+%d bytes; server: %s", s.Sent, s.Received, s.BytesSent, s.BytesReceived, s.ServerLine)
}

var serverSession = regexp.MustCompile(`session with \S+: (\S+) \(sent (\d+), received (\d+) records\)`)

// syncStats runs `ferry sync ADDR --json` from a against a freshly served
// b, requires both to succeed, and returns both sides' counts.
func syncStats(t *testing.T, a, b *store) sessionStats {
	t.Helper()
	srv := b.serve()
	out, errOut, code := a.ferry("sync", srv.addr, "--json")
	log := srv.stop()
	if code != 0 {
		t.Fatalf("%s: ferry sync with %s: exit %d\nstdout: %s\nstderr: %s\nserver: %s%s", a.name, b.name, code, out, errOut, log, srv.stderr.String())
	}
	if srv.code != 0 {
		t.Fatalf("ferry serve (%s) exited %d after SIGINT; stderr:\n%s", b.name, srv.code, srv.stderr.String())
	}
	var st struct {
		Sent          int   `json:"records_sent"`
		Received      int   `json:"records_received"`
		BytesSent     int64 `json:"bytes_sent"`
		BytesReceived int64 `json:"bytes_received"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ferry sync --json: %v\n%s", err, out)
	}
	m := serverSession.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("ferry serve (%s) logged no session:\n%s", b.name, log)
	}
	if m[1] == "error" || strings.Contains(srv.stderr.String(), "protocol") {
		t.Fatalf("ferry serve (%s): session ended in %s; stderr:\n%s", b.name, m[1], srv.stderr.String())
	}
	ss, _ := strconv.Atoi(m[2])
	sr, _ := strconv.Atoi(m[3])
	return sessionStats{Sent: st.Sent, Received: st.Received, BytesSent: st.BytesSent, BytesReceived: st.BytesReceived,
		ServerSent: ss, ServerRecv: sr, ServerLine: strings.TrimSpace(m[0])}
}

// withStore opens s in-process (no ferry process may hold it) and runs fn.
func withStore(t *testing.T, s *store, fn func(r *replica.Replica)) {
	t.Helper()
	r, err := replica.OpenExisting(context.Background(), s.dir, replica.Options{Passphrase: []byte(s.pass)})
	if err != nil {
		t.Fatalf("open %s: %v", s.name, err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Fatalf("close %s: %v", s.name, err)
		}
	}()
	fn(r)
}

// putNotes writes notes prefix000.. (count of them) into s, each about
// 200 bytes of JSON, plus big bytes of text in field "big" when big > 0.
func putNotes(t *testing.T, s *store, prefix string, count int, rev string, big int) {
	t.Helper()
	withStore(t, s, func(r *replica.Replica) {
		for i := range count {
			f := map[string]any{
				"title": fmt.Sprintf("%s note %03d", prefix, i),
				"body":  fmt.Sprintf("note %03d of %s: call back before noon, bring the spare keys, revision %s", i, s.name, rev),
				"n":     int64(i),
				"rev":   rev,
				"tags":  []any{"e2e", prefix},
			}
			if big > 0 {
				f["big"] = noise(big, fmt.Sprintf("%s/%s%03d/%s", s.name, prefix, i, rev))
			}
			if err := r.Put(context.Background(), "notes", fmt.Sprintf("%s%03d", prefix, i), f); err != nil {
				t.Fatalf("put on %s: %v", s.name, err)
			}
		}
	})
}

// noise returns n bytes of text that does not compress (hex of a
// SHA-256 chain from seed), so a large record stays large on the wire.
func noise(n int, seed string) string {
	var sb strings.Builder
	h := sha256.Sum256([]byte(seed))
	for sb.Len() < n {
		sb.WriteString(hex.EncodeToString(h[:]))
		h = sha256.Sum256(h[:])
	}
	return sb.String()[:n]
}

// holding is a store's notes: every live record's value, keyed by id.
func holding(t *testing.T, s *store) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	withStore(t, s, func(r *replica.Replica) {
		ctx := context.Background()
		p, err := r.List(ctx, "notes", replica.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			if out[it.ID], err = r.Get(ctx, "notes", it.ID); err != nil {
				t.Fatalf("%s: get %s: %v", s.name, it.ID, err)
			}
		}
	})
	return out
}

// sameHolding fails unless got holds exactly want's records and values.
func sameHolding(t *testing.T, what string, got, want map[string]map[string]any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Fatalf("%s: lacks %s", what, id)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%s: %s = %v, want %v", what, id, g, w)
		}
	}
}

// trustAll pairs every two of the stores for notes.
func trustAll(t *testing.T, ss ...*store) {
	t.Helper()
	for i, a := range ss {
		for _, b := range ss[i+1:] {
			pair(t, a, b)
		}
	}
}

// peerUpToDate fails unless the output of `ferry status` on store s
// shows its peer p up-to-date.
func peerUpToDate(t *testing.T, s, out string, p *store) {
	t.Helper()
	want := "peer " + short(p.id()) + ":"
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, want) {
			if !strings.Contains(line, ": up-to-date") {
				t.Fatalf("%s's status of %s: %q\n%s", s, p.name, line, out)
			}
			return
		}
	}
	t.Fatalf("%s's status does not list %s:\n%s", s, p.name, out)
}

// TestE2EThreeDevicesFirstMeeting: A syncs with B, B with C; A and C then
// meet for the first time holding identical data. Their session moves no
// record (issue 13: today every record moves both ways) and few bytes.
func TestE2EThreeDevicesFirstMeeting(t *testing.T) {
	a, b, c := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b"), newStore(t, "c", "pass-c")
	trustAll(t, a, b, c)
	putNotes(t, a, "a", sync2Records, "1", 0)
	putNotes(t, b, "b", 20, "1", 0) // b's own records travel both ways too

	ab := syncStats(t, a, b)
	if ab.Sent != sync2Records || ab.Received != 20 {
		t.Fatalf("a<->b: %v", ab)
	}
	bc := syncStats(t, b, c)
	if bc.Sent != sync2Records+20 || bc.Received != 0 {
		t.Fatalf("b->c: %v", bc)
	}
	ac := syncStats(t, a, c)
	t.Logf("a<->c, first meeting with %d identical records: %v", sync2Records+20, ac)
	if ac.moved() != 0 {
		t.Fatalf("a and c hold the same records, yet their first session moved some: %v", ac)
	}
	if total := ac.BytesSent + ac.BytesReceived; total > 16<<10 {
		t.Fatalf("a<->c: %d bytes on the wire for no difference", total)
	}
	want := holding(t, a)
	sameHolding(t, "c", holding(t, c), want)
	sameHolding(t, "b", holding(t, b), want)
	peerUpToDate(t, a.name, a.must("status"), c)
	if again := syncStats(t, c, a); again.moved() != 0 {
		t.Fatalf("c->a after their first meeting: %v", again)
	}
}

// cpA runs cp -a src dst, as a user saving or restoring a store would.
func cpA(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", src, dst, err, out)
	}
}

// TestE2ERestoredStoreHeals: cp -a B B.snap; more syncs (records of A,
// edits, and B's own records that reached A); rm -rf B; cp -a B.snap B.
// The next sync gives B back everything it lost, ends without a protocol
// violation, leaves both sides up-to-date, and a further sync moves
// nothing.
func TestE2ERestoredStoreHeals(t *testing.T) {
	a, b := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b")
	pair(t, a, b)
	putNotes(t, a, "a", 100, "1", 0)
	if st := syncStats(t, a, b); st.Sent != 100 {
		t.Fatalf("first sync: %v", st)
	}
	snap := b.dir + ".snap"
	cpA(t, b.dir, snap)

	// After the copy: a writes new records and edits old ones, b writes
	// its own; both reach the other side.
	putNotes(t, a, "late", 40, "1", 0)
	putNotes(t, a, "a", 10, "2", 0)
	putNotes(t, b, "b", 15, "1", 0)
	if st := syncStats(t, a, b); st.Sent != 50 || st.Received != 15 {
		t.Fatalf("second sync: %v", st)
	}
	want := holding(t, a)
	sameHolding(t, "b before the restore", holding(t, b), want)

	if err := os.RemoveAll(b.dir); err != nil {
		t.Fatal(err)
	}
	cpA(t, snap, b.dir)
	if got := holding(t, b); len(got) != 100 {
		t.Fatalf("the restored copy holds %d records, want the 100 of the copy", len(got))
	}

	heal := syncStats(t, a, b)
	t.Logf("healing session: %v", heal)
	sameHolding(t, "b after healing", holding(t, b), want)
	sameHolding(t, "a after healing", holding(t, a), want)
	if heal.Sent < 50 {
		t.Fatalf("healing session: a sent %d records, b lost 50 of a's and 15 of its own", heal.Sent)
	}
	if heal.Sent != heal.ServerRecv || heal.Received != heal.ServerSent {
		t.Fatalf("the two sides count the healing session differently: %v", heal)
	}
	statusA, statusB := a.must("status"), b.must("status") // checked last
	if again := syncStats(t, b, a); again.moved() != 0 {
		t.Fatalf("sync after healing moved records: %v", again)
	}
	if again := syncStats(t, a, b); again.moved() != 0 {
		t.Fatalf("second sync after healing moved records: %v", again)
	}
	peerUpToDate(t, a.name, statusA, b)
	peerUpToDate(t, b.name, statusB, a)
}

// TestE2EDeltaTravelsNoEcho: A, B and C in sync; A changes some records
// (one of them large); A syncs with B, B with C. C echoes nothing back to
// B in that session, and a further B-C session moves nothing.
func TestE2EDeltaTravelsNoEcho(t *testing.T) {
	a, b, c := newStore(t, "a", "pass-a"), newStore(t, "b", "pass-b"), newStore(t, "c", "pass-c")
	trustAll(t, a, b, c)
	putNotes(t, a, "a", sync2Records, "1", 0)
	syncStats(t, a, b)
	syncStats(t, b, c)
	syncStats(t, a, c)
	for _, pair := range [][2]*store{{a, b}, {b, c}, {a, c}} {
		if st := syncStats(t, pair[0], pair[1]); st.moved() != 0 {
			t.Fatalf("%s<->%s not settled: %v", pair[0].name, pair[1].name, st)
		}
	}

	putNotes(t, a, "a", 10, "2", 0)      // ten small edits
	putNotes(t, a, "big", 1, "2", 1<<20) // one new record of 1 MiB
	ab := syncStats(t, a, b)
	if ab.Sent != 11 || ab.Received != 0 {
		t.Fatalf("a->b delta: %v", ab)
	}
	cb := syncStats(t, c, b) // c pulls the delta from b
	t.Logf("c<-b delta: %v", cb)
	if cb.Received != 11 || cb.Sent != 0 {
		t.Fatalf("c<-b delta: b sent %d, c sent back %d records (echo): %v", cb.Received, cb.Sent, cb)
	}
	if st := syncStats(t, c, b); st.moved() != 0 {
		t.Fatalf("c<->b after the delta travelled a->b->c: %v", st)
	}
	if st := syncStats(t, b, c); st.moved() != 0 {
		t.Fatalf("b<->c again: %v", st)
	}
	sameHolding(t, "c", holding(t, c), holding(t, a))
}
