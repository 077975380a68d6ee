package consent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/internal/kv"
)

// memLog is the in-memory log; tests damage it with Rewrite. The anchor
// is an in-memory KV.
type memLog = kv.MemLog

type memAnchor = kv.Mem

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup(t *testing.T) (*Ledger, *memLog, *memAnchor, *clock) {
	t.Helper()
	lg, an, c := &memLog{}, kv.NewMem(), &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	l, err := Open(context.Background(), lg, an, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return l, lg, an, c
}

func TestGrantsExpireAndRevocationWins(t *testing.T) {
	ctx := context.Background()
	l, _, _, c := setup(t)
	g, err := l.Grant(ctx, Grant{Collection: "notes", Purpose: PurposeDeviceSync, Destination: "peer1", Expires: c.t.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Allowed("peer1", "notes", PurposeDeviceSync); !ok {
		t.Fatal("fresh grant not live")
	}
	for _, q := range [][3]string{{"peer2", "notes", PurposeDeviceSync}, {"peer1", "photos", PurposeDeviceSync}, {"peer1", "notes", PurposeBackup}} {
		if _, ok := l.Allowed(q[0], q[1], q[2]); ok {
			t.Fatalf("grant leaks to %v", q)
		}
	}
	c.t = c.t.Add(time.Hour)
	if _, ok := l.Allowed("peer1", "notes", PurposeDeviceSync); ok {
		t.Fatal("expired grant still live")
	}
	c.t = c.t.Add(-30 * time.Minute)
	// A second grant for the same scope; revoking the first leaves it.
	g2, err := l.Grant(ctx, Grant{Collection: "notes", Purpose: PurposeDeviceSync, Destination: "peer1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Revoke(ctx, g.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if got, ok := l.Allowed("peer1", "notes", PurposeDeviceSync); !ok || got.ID != g2.ID {
		t.Fatalf("after revoking one of two: %v %v", got, ok)
	}
	if n, err := l.RevokeDestination(ctx, "peer1", "untrust"); err != nil || n != 1 {
		t.Fatalf("revoke destination: %d %v", n, err)
	}
	if _, ok := l.Allowed("peer1", "notes", PurposeDeviceSync); ok || l.AnyAllowed("peer1", PurposeDeviceSync) {
		t.Fatal("revoked grants still live")
	}
	if err := l.Revoke(ctx, g.ID, "again"); !errors.Is(err, ErrNoGrant) {
		t.Fatalf("double revoke: %v", err)
	}
}

func TestGrantValidation(t *testing.T) {
	ctx := context.Background()
	l, _, _, c := setup(t)
	cases := map[string]Grant{
		"unknown purpose":     {Collection: "n", Purpose: "ads", Destination: "d"},
		"no collection":       {Purpose: PurposeBackup, Destination: "d"},
		"device-sync fields":  {Collection: "n", Fields: []string{"a"}, Purpose: PurposeDeviceSync, Destination: "d"},
		"expiry in the past":  {Collection: "n", Purpose: PurposeBackup, Destination: "d", Expires: c.t.Add(-time.Second)},
		"missing destination": {Collection: "n", Purpose: PurposeBackup},
		"NUL in collection":   {Collection: "a\x00b", Purpose: PurposeBackup, Destination: "d"},
		"tab in collection":   {Collection: "a\tb", Purpose: PurposeBackup, Destination: "d"},
		"broken UTF-8":        {Collection: "a\xff", Purpose: PurposeBackup, Destination: "d"},
	}
	for name, g := range cases {
		if _, err := l.Grant(ctx, g); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownPurpose) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if len(l.Live()) != 0 {
		t.Fatal("an invalid grant was recorded")
	}
}

func TestLedgerSurvivesReopenAndListsEverything(t *testing.T) {
	ctx := context.Background()
	l, lg, an, c := setup(t)
	g, _ := l.Grant(ctx, Grant{Collection: "stats", Fields: []string{"b", "a"}, Purpose: PurposeImprove, Destination: "https://collector"})
	if err := l.RecordShare(ctx, Share{GrantID: g.ID, Collection: "stats", Purpose: PurposeImprove, Destination: "https://collector", Records: 3, Bytes: 120}); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(ctx, lg, an, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	live := l2.Live()
	if len(live) != 1 || live[0].ID != g.ID || strings.Join(live[0].Fields, ",") != "a,b" {
		t.Fatalf("live after reopen: %+v", live)
	}
	es, err := l2.Entries(ctx)
	if err != nil || len(es) != 2 || es[1].Kind != KindShare || es[1].Share.Records != 3 {
		t.Fatalf("entries: %+v %v", es, err)
	}
}

func TestLedgerTamperDetected(t *testing.T) {
	ctx := context.Background()
	build := func(t *testing.T) (*memLog, *memAnchor, *clock) {
		l, lg, an, c := setup(t)
		for _, coll := range []string{"a", "b", "c"} {
			if _, err := l.Grant(ctx, Grant{Collection: coll, Purpose: PurposeBackup, Destination: "d"}); err != nil {
				t.Fatal(err)
			}
		}
		return lg, an, c
	}
	tamper := map[string]func(*memLog, *memAnchor){
		"altered entry": func(lg *memLog, _ *memAnchor) {
			lg.Rewrite(func(es [][]byte) [][]byte {
				es[1] = []byte(strings.Replace(string(es[1]), "b", "z", 1))
				return es
			})
		},
		"removed middle entry": func(lg *memLog, _ *memAnchor) {
			lg.Rewrite(func(es [][]byte) [][]byte { return append(es[:1:1], es[2:]...) })
		},
		"cut-off tail": func(lg *memLog, _ *memAnchor) {
			lg.Rewrite(func(es [][]byte) [][]byte { return es[:1] })
		},
		"reordered": func(lg *memLog, _ *memAnchor) {
			lg.Rewrite(func(es [][]byte) [][]byte {
				es[0], es[1] = es[1], es[0]
				return es
			})
		},
		"anchor removed": func(_ *memLog, an *memAnchor) {
			if err := an.Delete(ctx, "ledger"); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, fn := range tamper {
		t.Run(name, func(t *testing.T) {
			lg, an, c := build(t)
			if _, err := Open(ctx, lg, an, Options{Now: c.now}); err != nil {
				t.Fatalf("untampered ledger: %v", err)
			}
			fn(lg, an)
			if _, err := Open(ctx, lg, an, Options{Now: c.now}); !errors.Is(err, ErrTampered) {
				t.Fatalf("open after %s: %v", name, err)
			}
		})
	}
}

func TestAskRecordsTheAnswer(t *testing.T) {
	ctx := context.Background()
	l, _, _, _ := setup(t)
	req := Request{Collection: "usage", Fields: []string{"minutes"}, Purpose: PurposeImprove,
		Destination: "https://stats.example", DestinationName: "Stats server", For: 30 * 24 * time.Hour}
	var shown string
	_, err := l.Ask(ctx, req, func(p string, _ Request) (bool, error) { shown = p; return false, nil })
	if !errors.Is(err, ErrDeclined) {
		t.Fatalf("declined: %v", err)
	}
	for _, want := range []string{`"usage"`, "only the fields minutes", "Stats server (https://stats.example)", PurposeImprove, "until 2026-03-31"} {
		if !strings.Contains(shown, want) {
			t.Errorf("prompt %q lacks %q", shown, want)
		}
	}
	if _, ok := l.Allowed("https://stats.example", "usage", PurposeImprove); ok {
		t.Fatal("declined request granted")
	}
	g, err := l.Ask(ctx, req, func(string, Request) (bool, error) { return true, nil })
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := l.Allowed("https://stats.example", "usage", PurposeImprove); !ok || got.ID != g.ID {
		t.Fatal("accepted request not granted")
	}
	es, _ := l.Entries(ctx)
	var answers []bool
	for _, e := range es {
		if e.Kind == KindAnswer {
			answers = append(answers, e.Answer.Granted)
		}
	}
	if len(answers) != 2 || answers[0] || !answers[1] {
		t.Fatalf("answers recorded: %v", answers)
	}
}

// TestMembershipEntries: membership changes are chained entries like the
// rest, survive a reopen, are listed per space, and malformed ones are
// refused without touching the ledger.
func TestMembershipEntries(t *testing.T) {
	ctx := context.Background()
	l, lg, an, c := setup(t)
	for _, m := range []Membership{
		{Space: "space:aaaa", Member: "fp-self", Change: MemberCreated},
		{Space: "space:aaaa", Member: "fp-friend", Change: MemberAdded},
		{Space: "space:bbbb", Member: "fp-self", Change: MemberJoined},
		{Space: "space:aaaa", Member: "fp-friend", Change: MemberRemoved, Epoch: 1, Reason: "lost phone"},
	} {
		if err := l.RecordMembership(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []Membership{
		{Space: "space:aaaa", Member: "x", Change: "promoted"},
		{Space: "", Member: "x", Change: MemberAdded},
		{Space: "space:aaaa", Member: "", Change: MemberAdded},
	} {
		if err := l.RecordMembership(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
	l2, err := Open(ctx, lg, an, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := l2.Memberships(ctx, "space:aaaa")
	if err != nil || len(ms) != 3 || ms[2].Change != MemberRemoved || ms[2].Epoch != 1 || ms[2].Reason != "lost phone" {
		t.Fatalf("memberships: %+v %v", ms, err)
	}
	es, _ := l2.Entries(ctx)
	if len(es) != 4 || es[3].Kind != KindMember {
		t.Fatalf("entries: %d", len(es))
	}
}
