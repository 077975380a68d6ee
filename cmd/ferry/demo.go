package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/ferrysync/ferry/collector"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/privacy/anon"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

var demoCmd = &command{name: "demo", args: "[--keep]",
	summary: "run the whole story on temporary stores: offline edits, conflicts, TLS sync, a user decision, backup and restore, an anonymized share",
	example: "ferry demo",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &demoCommand{env: e}
		fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory and print its path")
		return c
	}}

// demoCommand is `ferry demo`.
type demoCommand struct {
	*env
	keep bool // keep the temporary directory
}

func (c *demoCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	if err := needArgs(args, 0); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return err
	}
	if c.keep {
		fmt.Fprintf(e.stdout, "(keeping %s)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	d := &demo{e: e, dir: dir}
	err = d.run(ctx)
	if err != nil {
		fmt.Fprintf(e.stdout, "\nFAILED at step %d: %v\n", d.step, err)
		return fmt.Errorf("demo failed: %w", err)
	}
	fmt.Fprintf(e.stdout, "\nAll %d steps did what they said.\n", d.step)
	return nil
}

type demo struct {
	e    *env
	dir  string
	step int
	set  *policy.Set

	mu   sync.Mutex
	tick time.Time
}

// now is the demo's clock, shared by its devices: it advances a
// millisecond at every read, so a later edit is always later, whatever
// the machine's clock resolution.
func (d *demo) now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tick.IsZero() {
		d.tick = time.Now().UTC().Truncate(time.Second)
	}
	d.tick = d.tick.Add(time.Millisecond)
	return d.tick
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.e.stdout, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) note(format string, args ...any) {
	fmt.Fprintf(d.e.stdout, "   %s\n", fmt.Sprintf(format, args...))
}

func check(ok bool, format string, args ...any) error {
	if !ok {
		return fmt.Errorf(format, args...)
	}
	return nil
}

func (d *demo) open(ctx context.Context, name, pass string) (*replica.Replica, error) {
	return replica.Open(ctx, filepath.Join(d.dir, name), replica.Options{
		Passphrase: []byte(pass), KDF: storage.TestKDF(), Name: name, Policies: d.set, Now: d.now,
	})
}

// syncTLS runs one session: b serves on loopback TLS, a dials; each pins
// the other's key.
func syncTLS(ctx context.Context, a, b *replica.Replica) (replica.SyncStats, error) {
	pubOf := func(r *replica.Replica) ed25519.PublicKey { return r.Identity().Public().(ed25519.PublicKey) }
	l, err := transport.ListenTLS(ctx, "127.0.0.1:0", b.Identity(), transport.NewPinSet(pubOf(a)), transport.TLSOptions{})
	if err != nil {
		return replica.SyncStats{}, err
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept(ctx)
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		_, err = b.Sync(ctx, conn)
		served <- err
	}()
	conn, err := transport.DialTLS(ctx, l.Addr(), a.Identity(), transport.NewPinSet(pubOf(b)), transport.TLSOptions{})
	if err != nil {
		<-served
		return replica.SyncStats{}, err
	}
	st, err := a.Sync(ctx, conn)
	conn.Close()
	if serr := <-served; err == nil {
		err = serr
	}
	return st, err
}

func (d *demo) run(ctx context.Context) error {
	var err error
	d.set, err = policy.Parse([]byte(`{"version":1,"default":{"policy":"timestamp"},
		"collections":{"notes":{"policy":"timestamp","fields":{"/title":{"policy":"user","deadline":"24h"}}}}}`))
	if err != nil {
		return err
	}

	d.say("Two devices, each with its own encrypted store and passphrase.")
	laptop, err := d.open(ctx, "laptop", "laptop passphrase")
	if err != nil {
		return err
	}
	defer laptop.Close()
	phone, err := d.open(ctx, "phone", "phone passphrase")
	if err != nil {
		return err
	}
	defer phone.Close()
	d.note("laptop %s", laptop.ID())
	d.note("phone  %s", phone.ID())
	d.note("policies: timestamp by default; a note's title is decided by the user (fingerprint %s)", d.set.Fingerprint()[:12])

	d.say("Pairing: each device grants the other device-sync of \"notes\", and nothing else.")
	if _, err := laptop.Pair(ctx, phone.ID(), []string{"notes"}, 0); err != nil {
		return err
	}
	if _, err := phone.Pair(ctx, laptop.ID(), []string{"notes"}, 0); err != nil {
		return err
	}
	if err := laptop.Put(ctx, "diary", "today", map[string]any{"text": "private, never shared"}); err != nil {
		return err
	}
	d.note("the laptop also keeps a \"diary\" collection that it has granted to no one")

	d.say("Offline: both devices write notes without seeing each other.")
	if err := laptop.Put(ctx, "notes", "shopping", map[string]any{"title": "Shopping", "items": []any{"milk"}}); err != nil {
		return err
	}
	if err := phone.Put(ctx, "notes", "ideas", map[string]any{"title": "Ideas", "body": "a boat that syncs"}); err != nil {
		return err
	}
	st, err := syncTLS(ctx, laptop, phone)
	if err != nil {
		return err
	}
	d.note("sync over loopback TLS 1.3, each side pinning the other's Ed25519 key: sent %d, received %d records", st.RecordsSent, st.RecordsReceived)
	if err := d.same(ctx, laptop, phone, "notes", 2); err != nil {
		return err
	}
	if _, err := phone.Get(ctx, "diary", "today"); !errors.Is(err, replica.ErrNotFound) {
		return fmt.Errorf("the diary reached the phone: %v", err)
	}
	d.note("both hold both notes; the diary stayed on the laptop")

	d.say("Offline again, both edit the same note.")
	if err := laptop.Update(ctx, "notes", "shopping", func(doc *crdt.Doc) error {
		if err := doc.Set("title", "Weekly shop"); err != nil {
			return err
		}
		if err := doc.Set("store", "market"); err != nil {
			return err
		}
		return doc.ListAppend("items", "eggs")
	}); err != nil {
		return err
	}
	if err := phone.Update(ctx, "notes", "shopping", func(doc *crdt.Doc) error {
		if err := doc.Set("title", "Groceries"); err != nil {
			return err
		}
		if err := doc.Set("store", "corner shop"); err != nil {
			return err
		}
		return doc.ListAppend("items", "bread")
	}); err != nil {
		return err
	}
	d.note("laptop: title \"Weekly shop\", store \"market\", +eggs")
	d.note("phone:  title \"Groceries\", store \"corner shop\", +bread")

	d.say("They sync: the list merges, the store goes to the later write, the title waits for the user.")
	if st, err = syncTLS(ctx, phone, laptop); err != nil {
		return err
	}
	d.note("conflicts found: %d", st.Conflicts)
	if err := d.same(ctx, laptop, phone, "notes", 2); err != nil {
		return err
	}
	shop, err := laptop.Get(ctx, "notes", "shopping")
	if err != nil {
		return err
	}
	items, _ := shop["items"].([]any)
	sort.Slice(items, func(i, j int) bool { return fmt.Sprint(items[i]) < fmt.Sprint(items[j]) })
	if err := check(reflect.DeepEqual(items, []any{"bread", "eggs", "milk"}), "items = %v", shop["items"]); err != nil {
		return err
	}
	if err := check(shop["store"] == "corner shop", "store = %v, want the later write", shop["store"]); err != nil {
		return err
	}
	d.note("items %v (merged by the CRDT), store %q (timestamp policy)", shop["items"], shop["store"])
	qL, _ := laptop.Conflicts(ctx)
	qP, _ := phone.Conflicts(ctx)
	if err := check(len(qL) == 1 && len(qP) == 1 && qL[0].ID() == qP[0].ID(), "queues differ: %d vs %d", len(qL), len(qP)); err != nil {
		return err
	}
	c := qL[0]
	d.note("queued for the user on both devices: %s %s/%s %s, provisionally %q",
		c.ID()[:8], c.Collection, c.RecordID, c.Conflict.Path, shop["title"])
	for i, cand := range c.Conflict.Candidates {
		d.note("  [%d] %q from %s", i, cand.Value, short(cand.ReplicaID))
	}

	d.say("On the phone, the user picks the laptop's title; the decision syncs back.")
	pick := -1
	for i, cand := range c.Conflict.Candidates {
		if cand.Value == "Weekly shop" {
			pick = i
		}
	}
	if err := check(pick >= 0, "no candidate \"Weekly shop\""); err != nil {
		return err
	}
	if err := phone.ResolvePick(ctx, c.ID(), pick); err != nil {
		return err
	}
	if _, err := syncTLS(ctx, phone, laptop); err != nil {
		return err
	}
	for _, r := range []*replica.Replica{laptop, phone} {
		m, err := r.Get(ctx, "notes", "shopping")
		if err != nil {
			return err
		}
		q, _ := r.Conflicts(ctx)
		if err := check(m["title"] == "Weekly shop" && len(q) == 0, "%s: title %v, %d open", r.Name(), m["title"], len(q)); err != nil {
			return err
		}
	}
	st, err = syncTLS(ctx, laptop, phone)
	if err != nil {
		return err
	}
	if err := check(st.RecordsSent+st.RecordsReceived == 0, "a quiescent sync moved %d records", st.RecordsSent+st.RecordsReceived); err != nil {
		return err
	}
	d.note("both show \"Weekly shop\", no open conflicts, and one more sync moves nothing (%d frames)", st.FramesSent+st.FramesReceived)

	d.say("Backup: the laptop exports an encrypted age file; a new device restores it under its own passphrase.")
	var backup bytes.Buffer
	bst, err := laptop.Backup(ctx, &backup, storage.ExportOptions{Passphrase: []byte("backup passphrase"), ScryptWorkFactor: 10})
	if err != nil {
		return err
	}
	if err := check(!bytes.Contains(backup.Bytes(), []byte("Weekly shop")), "the backup holds plaintext"); err != nil {
		return err
	}
	tablet, err := d.open(ctx, "tablet", "tablet passphrase")
	if err != nil {
		return err
	}
	defer tablet.Close()
	ist, err := tablet.Restore(ctx, bytes.NewReader(backup.Bytes()), storage.ImportOptions{Passphrase: []byte("backup passphrase")})
	if err != nil {
		return err
	}
	if err := d.same(ctx, laptop, tablet, "notes", 2); err != nil {
		return err
	}
	d.note("exported %d records (%d bytes); restored %d on the tablet; its notes equal the laptop's", bst.Records, bst.Bytes, ist.Created)
	truncated := backup.Bytes()[:backup.Len()-10]
	if _, err := tablet.Restore(ctx, bytes.NewReader(truncated), storage.ImportOptions{Passphrase: []byte("backup passphrase")}); !errors.Is(err, storage.ErrBadBackup) {
		return fmt.Errorf("a truncated backup was not refused: %v", err)
	}
	d.note("a truncated copy of the backup is refused, and the tablet is unchanged")

	if err := d.share(ctx, laptop); err != nil {
		return err
	}

	d.say("The laptop closes; every byte of its store directory is read back.")
	if err := laptop.Close(); err != nil {
		return err
	}
	secrets := []string{"laptop passphrase", "shopping", "Weekly shop", "diary", "private, never shared", "alice@example.com", "Lyon", "minutes"}
	n, err := d.leaksNothing(filepath.Join(d.dir, "laptop"), secrets)
	if err != nil {
		return err
	}
	d.note("%d files, %d bytes: no passphrase, collection, record id, field name or value in plaintext", n.files, n.bytes)
	return nil
}

// same checks that two replicas hold the same n records of a collection.
func (d *demo) same(ctx context.Context, a, b *replica.Replica, coll string, n int) error {
	pa, err := a.List(ctx, coll, replica.ListOptions{})
	if err != nil {
		return err
	}
	pb, err := b.List(ctx, coll, replica.ListOptions{})
	if err != nil {
		return err
	}
	if len(pa.Items) != n || len(pb.Items) != n {
		return fmt.Errorf("%s holds %d, %s holds %d records, want %d", a.Name(), len(pa.Items), b.Name(), len(pb.Items), n)
	}
	for _, it := range pa.Items {
		ma, err := a.Get(ctx, coll, it.ID)
		if err != nil {
			return err
		}
		mb, err := b.Get(ctx, coll, it.ID)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(ma, mb) {
			return fmt.Errorf("%s/%s differs: %v vs %v", coll, it.ID, ma, mb)
		}
	}
	return nil
}

type scanned struct{ files, bytes int }

// leaksNothing reads every file of a closed store's directory and fails
// if any secret appears in it.
func (d *demo) leaksNothing(dir string, secrets []string) (scanned, error) {
	var n scanned
	err := filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n.files++
		n.bytes += len(b)
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				return fmt.Errorf("%s holds %q in plaintext", p, s)
			}
		}
		return nil
	})
	return n, err
}

// share runs the anonymized-statistics step.
func (d *demo) share(ctx context.Context, laptop *replica.Replica) error {
	d.say("Usage statistics go to a model-improvement server: anonymized, one way, only with consent.")
	users := []string{"alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com", "erin@example.com", "frank@example.com"}
	for i, u := range users {
		if err := laptop.Put(ctx, "usage", fmt.Sprintf("session-%d", i), map[string]any{
			"user": u, "minutes": int64(10 + 7*i), "model": []string{"small", "large"}[i%2], "city": "Lyon", "device": "laptop-of-" + u,
		}); err != nil {
			return err
		}
	}
	srv, err := collector.NewServer(collector.ServerOptions{})
	if err != nil {
		return err
	}
	running, err := srv.Start(ctx, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer running.Close()
	url := running.URL()
	rules := anon.Rules{Collection: "usage", Purpose: consent.PurposeImprove,
		Fields: map[string]anon.FieldRule{
			"user":    {Kind: anon.Pseudonymize},
			"minutes": {Kind: anon.Generalize, Bucket: 15, Format: anon.Range},
			"model":   {Kind: anon.Keep},
		},
		QuasiIdentifiers: []string{"model"}, K: 2}
	_, err = laptop.Consent().Ask(ctx, consent.Request{Collection: "usage", Fields: []string{"minutes", "model", "user"},
		Purpose: consent.PurposeImprove, Destination: url, DestinationName: "the local collector", For: 30 * 24 * time.Hour},
		func(prompt string, _ consent.Request) (bool, error) {
			d.note("the app asks: %s", prompt)
			d.note("the user answers yes")
			return true, nil
		})
	if err != nil {
		return err
	}
	res, err := laptop.Share(ctx, replica.ShareOptions{Rules: rules, DestinationID: url,
		Destination: &collector.HTTPDestination{URL: url, Format: collector.JSON}})
	if err != nil {
		return err
	}
	got := srv.Batches()
	if err := check(len(got) == 1 && len(got[0].Records) == res.Records && res.Records == len(users), "collector got %d batches", len(got)); err != nil {
		return err
	}
	wire, _ := json.Marshal(got[0].Records)
	for _, secret := range append(users, "Lyon", "laptop-of", "session-") {
		if bytes.Contains(wire, []byte(secret)) {
			return fmt.Errorf("%q reached the collector", secret)
		}
	}
	d.note("the collector received %d records, e.g. %s", res.Records, firstRecord(got[0].Records))
	d.note("no e-mail, city, device or record id left the laptop; users are per-month pseudonyms")
	es, err := laptop.Consent().Entries(ctx)
	if err != nil {
		return err
	}
	last := es[len(es)-1]
	if err := check(last.Kind == consent.KindShare && last.Share.Records == res.Records, "the ledger's last entry is %s", last.Kind); err != nil {
		return err
	}
	d.note("the consent ledger records it: %s", describeEntry(last))
	return nil
}

func firstRecord(rs []map[string]any) string {
	if len(rs) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(rs[0])
	return string(b)
}
