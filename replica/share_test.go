package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/collector"
	"github.com/ferrysync/ferry/privacy/anon"
	"github.com/ferrysync/ferry/privacy/consent"
)

var usageRules = anon.Rules{Collection: "usage", Purpose: consent.PurposeImprove,
	Fields: map[string]anon.FieldRule{
		"user":    {Kind: anon.Pseudonymize},
		"minutes": {Kind: anon.Generalize, Bucket: 10},
		"model":   {Kind: anon.Keep},
		"city":    {Kind: anon.Keep}, // named by a rule, but the grant below leaves it out
	}}

func putUsage(t *testing.T, r *Replica) {
	for i := range 6 {
		mustPut(t, r, "usage", fmt.Sprintf("sess-%d", i), map[string]any{
			"user": fmt.Sprintf("user%d@example.com", i%3), "minutes": int64(5 * i), "model": "m1",
			"city": "Lyon", "notes": "free text that no rule names",
		})
	}
}

// TestShareToHTTPCollector: a replica shares anonymized usage records
// with a collector over HTTP on loopback. The collector receives only what
// the rules and the grant allow; without a live grant nothing is sent.
func TestShareToHTTPCollector(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	putUsage(t, r)
	ctx := context.Background()
	srv, err := collector.NewServer(collector.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	run, err := srv.Start(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()
	url := run.URL()
	opts := ShareOptions{Rules: usageRules, DestinationID: url, Destination: &collector.HTTPDestination{URL: url, Format: collector.JSON}}

	if _, err := r.Share(ctx, opts); !errors.Is(err, ErrNoConsent) {
		t.Fatalf("share without a grant: %v", err)
	}
	if len(srv.Batches()) != 0 {
		t.Fatal("the collector received data without a grant")
	}
	g, err := r.Consent().Grant(ctx, consent.Grant{Collection: "usage", Purpose: consent.PurposeImprove, Destination: url,
		Fields: []string{"user", "minutes", "model"}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Share(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	got := srv.Batches()
	if len(got) != 1 || len(got[0].Records) != 6 || res.Records != 6 || res.GrantID != g.ID {
		t.Fatalf("batches %d, result %+v", len(got), res)
	}
	wire, _ := json.Marshal(got[0])
	for _, leak := range []string{"@example.com", "Lyon", "city", "notes", "free text", "sess-", "_ferry", r.ID()} {
		if strings.Contains(string(wire), leak) {
			t.Fatalf("%q reached the collector: %s", leak, wire)
		}
	}
	users := map[any]int{}
	for _, rec := range got[0].Records {
		users[rec["user"]]++
		if len(rec) != 3 {
			t.Fatalf("record has fields %v", rec)
		}
	}
	if len(users) != 3 {
		t.Fatalf("pseudonyms: %v (want three distinct, stable within the epoch)", users)
	}
	es, _ := r.Consent().Entries(ctx)
	if last := es[len(es)-1]; last.Kind != consent.KindShare || last.Share.Records != 6 || last.Share.GrantID != g.ID {
		t.Fatalf("ledger: %+v", last)
	}
	if err := r.Consent().Revoke(ctx, g.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Share(ctx, opts); !errors.Is(err, ErrNoConsent) {
		t.Fatalf("share after revocation: %v", err)
	}
	if len(srv.Batches()) != 1 {
		t.Fatal("a revoked grant still shared")
	}
}

// TestShareToPeer: the same share over a ferry connection to a peer, and
// only to the peer the grant names.
func TestShareToPeer(t *testing.T) {
	e := newEnv(t)
	a, b, other := e.replica("a"), e.replica("b"), e.replica("other")
	putUsage(t, a)
	ctx := context.Background()
	if _, err := a.Consent().Grant(ctx, consent.Grant{Collection: "usage", Purpose: consent.PurposeImprove, Destination: b.ID()}); err != nil {
		t.Fatal(err)
	}
	share := func(to *Replica, destID string) (ShareResult, error, error) {
		l, err := e.net.Listen(to.ID(), pub(to))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		got := make(chan error, 1)
		go func() {
			conn, err := l.Accept(ctx)
			if err != nil {
				got <- err
				return
			}
			defer conn.Close()
			batch, err := ReceiveShare(ctx, conn)
			if err == nil && len(batch.Records) != 6 {
				err = fmt.Errorf("received %d records", len(batch.Records))
			}
			got <- err
		}()
		conn, err := e.net.Dialer(a.ID(), pub(a)).Dial(ctx, to.ID())
		if err != nil {
			t.Fatal(err)
		}
		res, err := a.Share(ctx, ShareOptions{Rules: usageRules, DestinationID: destID, Destination: &PeerDestination{Conn: conn}})
		conn.Close()
		return res, err, <-got
	}
	res, err, errB := share(b, b.ID())
	if err != nil || errB != nil || res.Records != 6 {
		t.Fatalf("share to the granted peer: %+v %v %v", res, err, errB)
	}
	// A connection to another peer cannot borrow b's grant.
	if _, err, _ := share(other, b.ID()); !errors.Is(err, ErrNoConsent) {
		t.Fatalf("share over a connection to another peer: %v", err)
	}
}

// TestShareDestinationFailureRecordsNothing: with an in-memory
// destination, a refused send returns the destination's error and leaves
// no share in the ledger; the next share that arrives is recorded once.
func TestShareDestinationFailureRecordsNothing(t *testing.T) {
	e := newEnv(t)
	r := e.replica("a")
	putUsage(t, r)
	ctx := context.Background()
	dest := &collector.MemDestination{Fail: func(collector.Batch) error { return collector.ErrRejected }}
	opts := ShareOptions{Rules: usageRules, DestinationID: "mem:collector", Destination: dest}
	if _, err := r.Consent().Grant(ctx, consent.Grant{Collection: "usage", Purpose: consent.PurposeImprove, Destination: "mem:collector",
		Fields: []string{"user", "minutes", "model"}}); err != nil {
		t.Fatal(err)
	}
	shares := func() int {
		es, err := r.Consent().Entries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, en := range es {
			if en.Kind == consent.KindShare {
				n++
			}
		}
		return n
	}
	if _, err := r.Share(ctx, opts); !errors.Is(err, collector.ErrRejected) {
		t.Fatalf("share to a refusing destination: %v", err)
	}
	if n := shares(); n != 0 || len(dest.Batches()) != 0 {
		t.Fatalf("after a refused send: %d ledger shares, %d batches", n, len(dest.Batches()))
	}
	dest.Fail = nil
	res, err := r.Share(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := dest.Batches(); len(got) != 1 || len(got[0].Records) != res.Records || res.Records != 6 {
		t.Fatalf("batches %+v, result %+v", got, res)
	}
	if n := shares(); n != 1 {
		t.Fatalf("ledger holds %d shares, want 1", n)
	}
}
