package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

func parsePolicySet(b []byte) (*policy.Set, error) { return policy.Parse(b) }

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func flagBool(fs *flag.FlagSet, name string) bool  { return fs.Lookup(name).Value.String() == "true" }
func flagStr(fs *flag.FlagSet, name string) string { return fs.Lookup(name).Value.String() }

// progressPrinter shows a one-line counter on a terminal and nothing
// otherwise.
func (e *env) progressPrinter(label string) func(done, total int) {
	if !e.progress {
		return func(int, int) {}
	}
	return func(done, total int) {
		if total > 0 {
			fmt.Fprintf(e.stderr, "\r%s %d/%d", label, done, total)
		} else {
			fmt.Fprintf(e.stderr, "\r%s %d", label, done)
		}
		if total > 0 && done >= total {
			fmt.Fprintln(e.stderr)
		}
	}
}

func init() {
	register(&command{name: "consent", args: "list [--json] | log [--json] | revoke GRANT-ID | grant COLLECTION --to DEST --purpose P [--fields A,B] [--expires D]",
		summary: "list, grant and revoke permissions to share, and show the ledger of every share",
		example: "ferry consent grant usage --to http://127.0.0.1:8080/collect --purpose improve-model-quality --fields minutes,model --expires 720h",
		flags: func(fs *flag.FlagSet) {
			fs.Bool("json", false, "print JSON (list: an array of grants; log: an array of ledger entries)")
			fs.String("to", "", "grant: the destination (peer fingerprint or URL)")
			fs.String("purpose", "", "grant: the purpose ("+strings.Join([]string{consent.PurposeDeviceSync, consent.PurposeBackup, consent.PurposeImprove}, ", ")+")")
			fs.String("fields", "", "grant: only these fields (anonymized shares)")
			fs.Duration("expires", 0, "grant: lapses after this long (default: until revoked)")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if len(args) == 0 {
				return usagef("want list, log, revoke or grant")
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				l := r.Consent()
				switch args[0] {
				case "list":
					live := l.Live()
					if flagBool(fs, "json") {
						if live == nil {
							live = []consent.Grant{}
						}
						return e.printJSON(live)
					}
					for _, g := range live {
						exp := "until revoked"
						if !g.Expires.IsZero() {
							exp = "until " + g.Expires.UTC().Format(time.RFC3339)
						}
						fields := "all fields"
						if len(g.Fields) > 0 {
							fields = strings.Join(g.Fields, ",")
						}
						fmt.Fprintf(e.stdout, "%s  %s (%s) -> %s for %s, %s\n", g.ID, g.Collection, fields, g.Destination, g.Purpose, exp)
					}
					return nil
				case "log":
					es, err := l.Entries(ctx)
					if err != nil {
						return err
					}
					if flagBool(fs, "json") {
						if es == nil {
							es = []consent.Entry{}
						}
						return e.printJSON(es)
					}
					for _, en := range es {
						fmt.Fprintf(e.stdout, "%d %s %s %s\n", en.Seq, en.At.UTC().Format(time.RFC3339), en.Kind, describeEntry(en))
					}
					return nil
				case "revoke":
					if len(args) != 2 {
						return usagef("want revoke GRANT-ID")
					}
					if err := l.Revoke(ctx, args[1], "revoked by the user"); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "revoked %s\n", args[1])
					return nil
				case "grant":
					if len(args) != 2 || flagStr(fs, "to") == "" || flagStr(fs, "purpose") == "" {
						return usagef("want grant COLLECTION --to DEST --purpose P")
					}
					g := consent.Grant{Collection: args[1], Destination: flagStr(fs, "to"), Purpose: flagStr(fs, "purpose"),
						Fields: splitList(flagStr(fs, "fields"))}
					if d, _ := time.ParseDuration(flagStr(fs, "expires")); d > 0 {
						g.Expires = time.Now().Add(d)
					} else if d < 0 {
						return usagef("--expires %v is negative: give how long the grant lasts (e.g. 720h)", d)
					}
					g, err := l.Grant(ctx, g)
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "granted %s\n", g.ID)
					return nil
				}
				return usagef("unknown consent subcommand %q", args[0])
			})
		}})

	register(&command{name: "serve", args: "--listen ADDR | --relay RELAY-URL [--interval D]", summary: "accept sync sessions from trusted peers over TLS, or keep syncing through a relay (until interrupted)",
		example: "ferry serve --listen 127.0.0.1:7420\nferry serve --relay http://127.0.0.1:7443 --interval 30s",
		flags: func(fs *flag.FlagSet) {
			fs.String("listen", "127.0.0.1:7420", "the TCP address to listen on")
			fs.String("relay", "", "sync through this relay instead, every --interval")
			fs.Duration("interval", 30*time.Second, "with --relay: time between syncs")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			every, _ := time.ParseDuration(flagStr(fs, "interval"))
			if every <= 0 {
				return usagef("--interval %v: want a positive duration (e.g. 30s)", every)
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				if url := flagStr(fs, "relay"); url != "" {
					fmt.Fprintf(e.stdout, "syncing %s through %s every %s\n", e.dir, url, every)
					for {
						if err := syncRelayOnce(ctx, e, r, url, false); err != nil {
							if ctx.Err() != nil {
								return nil
							}
							fmt.Fprintf(e.stderr, "ferry serve: %s\n", oneLine(err))
						}
						select {
						case <-ctx.Done():
							return nil
						case <-time.After(every):
						}
					}
				}
				pins := watchPins(r, func(fp string) { fmt.Fprintf(e.stderr, "ferry serve: %s\n", refusedLine(ctx, r, fp)) })
				l, err := transport.ListenTLS(ctx, flagStr(fs, "listen"), r.Identity(), pins, transport.TLSOptions{})
				if err != nil {
					return err
				}
				defer l.Close()
				fmt.Fprintf(e.stdout, "serving %s on %s (replica %s)\n", e.dir, l.Addr(), r.ID())
				// The watch outlives Serve, which returns only once every
				// session has ended and published its status, so each
				// session's line is printed before serve exits.
				watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
				events := r.Watch(watchCtx)
				printed := make(chan struct{})
				go func() {
					defer close(printed)
					for ev := range events {
						if ev.Kind == replica.EventStatus && ev.Status.State != replica.Syncing {
							s := ev.Status
							fmt.Fprintf(e.stdout, "session with %s: %s (sent %d, received %d records)\n",
								short(s.Peer), s.State, s.Progress.RecordsSent, s.Progress.RecordsReceived)
						}
					}
				}()
				err = r.Serve(ctx, l)
				stopWatch()
				<-printed
				return err
			})
		}})

	register(&command{name: "sync", args: "ADDR|RELAY-URL [--json]", summary: "run one sync session with a trusted peer (or through a relay) and print what moved",
		example: "ferry sync 127.0.0.1:7420\nferry sync http://127.0.0.1:7443   # through a relay: see 'ferry space --help'",
		flags: func(fs *flag.FlagSet) {
			fs.Bool("json", false, "print the summary as JSON (the SyncStats fields)")
			fs.Duration("timeout", 2*time.Minute, "give up after this long")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 1); err != nil {
				return err
			}
			d, _ := time.ParseDuration(flagStr(fs, "timeout"))
			if d <= 0 {
				return usagef("--timeout %v: want a positive duration (e.g. 2m)", d)
			}
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return e.withReplica(ctx, func(r *replica.Replica) error {
				if isRelayURL(args[0]) {
					return syncRelayOnce(ctx, e, r, args[0], flagBool(fs, "json"))
				}
				pins := watchPins(r, nil)
				conn, err := transport.DialTLS(ctx, args[0], r.Identity(), pins, transport.TLSOptions{})
				if err != nil {
					return pins.explainDial(ctx, args[0], err)
				}
				defer conn.Close()
				show := e.progressPrinter("records received")
				st, err := r.SyncWith(ctx, conn, replica.SyncOptions{Progress: func(s replica.SyncStats) { show(s.RecordsReceived, 0) }})
				if e.progress {
					fmt.Fprintln(e.stderr)
				}
				if err != nil {
					return err
				}
				if flagBool(fs, "json") {
					return e.printJSON(st)
				}
				fmt.Fprintf(e.stdout, "synced with %s: sent %d records (%d bytes), received %d records (%d bytes), %d conflicts, %d frames\n",
					short(st.Peer), st.RecordsSent, st.BytesSent, st.RecordsReceived, st.BytesReceived, st.Conflicts, st.FramesSent+st.FramesReceived)
				return nil
			})
		}})

	register(&command{name: "status", args: "[--json]", summary: "the sync state per peer, open conflicts and counts",
		example: "ferry status --json",
		flags: func(fs *flag.FlagSet) {
			fs.Bool("json", false, "print {\"overall\":Status,\"peers\":[Status],\"records\":{collection:count}}")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				all, peers := r.Status(ctx)
				counts := map[string]int{}
				colls, err := r.Collections(ctx)
				if err != nil {
					return err
				}
				for _, c := range colls {
					p, err := r.List(ctx, c, replica.ListOptions{})
					if err != nil {
						return err
					}
					counts[c] = len(p.Items)
				}
				if flagBool(fs, "json") {
					if peers == nil {
						peers = []replica.Status{}
					}
					return e.printJSON(map[string]any{"replica": r.ID(), "overall": all, "peers": peers, "records": counts})
				}
				fmt.Fprintf(e.stdout, "replica %s: %s, %d open conflicts\n", r.ID(), all.State, all.OpenConflicts)
				isPeer := map[string]bool{}
				for _, p := range peers {
					isPeer[p.Peer] = true
					line := fmt.Sprintf("  peer %s: %s", short(p.Peer), p.State)
					if !p.LastSync.IsZero() {
						line += ", last sync " + p.LastSync.UTC().Format(time.RFC3339)
					}
					if p.LastError != "" {
						line += fmt.Sprintf(", attempt %d failed: %s", p.Attempt, p.LastError)
					}
					if p.Warning != "" {
						line += "; " + p.Warning
					}
					if p.ClockSkew != nil {
						line += ", " + skewText(*p.ClockSkew)
					}
					fmt.Fprintln(e.stdout, line)
				}
				for _, sk := range all.ClockSkews {
					if !isPeer[sk.Replica] {
						fmt.Fprintf(e.stdout, "  writer %s (not a direct peer): %s\n", short(sk.Replica), skewText(sk))
					}
				}
				if all.ClockBehind {
					fmt.Fprintln(e.stdout, "  this device's clock looks behind: most writers it hears from are ahead of it; check its date and time")
				}
				for _, c := range colls {
					fmt.Fprintf(e.stdout, "  %s: %d records\n", c, counts[c])
				}
				return nil
			})
		}})

	register(&command{name: "conflicts", args: "[--json]", summary: "list conflicts waiting for you, with their candidates",
		example: "ferry conflicts",
		flags:   func(fs *flag.FlagSet) { fs.Bool("json", false, "print JSON (an array of queued conflicts)") },
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				list, err := r.Conflicts(ctx)
				if err != nil {
					return err
				}
				if flagBool(fs, "json") {
					out := make([]conflictJSON, 0, len(list))
					for _, en := range list {
						out = append(out, toConflictJSON(en))
					}
					return e.printJSON(out)
				}
				for _, en := range list {
					c := toConflictJSON(en)
					showing := fmt.Sprintf("showing candidate %d", c.Provisional)
					if c.Provisional < 0 {
						showing = "showing none of the candidates"
					}
					fmt.Fprintf(e.stdout, "%s  %s/%s %s (decide by %s; %s)\n", c.ID, c.Collection, c.Record, c.Path,
						c.Deadline.UTC().Format(time.RFC3339), showing)
					for _, cand := range c.Candidates {
						v := []byte(cand.Value)
						if cand.Deleted {
							v = []byte("(deleted)")
						}
						fmt.Fprintf(e.stdout, "    [%d] %s  by %s at %s\n", cand.Index, v, short(cand.Replica), cand.At.UTC().Format(time.RFC3339))
					}
				}
				return nil
			})
		}})

	register(&command{name: "resolve", args: "CONFLICT-ID (--pick N | --value JSON)", summary: "decide a conflict: pick a candidate or give a value",
		example: "ferry resolve 29de7131 --pick 1",
		flags: func(fs *flag.FlagSet) {
			fs.Int("pick", -1, "the candidate's index, as 'ferry conflicts' lists it")
			fs.String("value", "", "a JSON value to write instead")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 1); err != nil {
				return err
			}
			pick, _ := strconv.Atoi(flagStr(fs, "pick"))
			val := flagStr(fs, "value")
			if (pick >= 0) == (val != "") {
				return usagef("give exactly one of --pick and --value")
			}
			var v any
			if val != "" {
				var err error
				if v, err = parseJSONValue(val); err != nil {
					return err
				}
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				id, err := expandConflictID(ctx, r, args[0])
				if err != nil {
					return err
				}
				if val != "" {
					err = r.ResolveValue(ctx, id, v)
				} else {
					err = r.ResolvePick(ctx, id, pick)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "resolved %s\n", id)
				return nil
			})
		}})

	register(&command{name: "policy", args: "[--json]", summary: "show the conflict policy set (ferry-policy.json in the store directory) and its fingerprint",
		example: `cat > $FERRY_DIR/ferry-policy.json <<'EOF'
{"version":1,"default":{"policy":"timestamp"},
 "collections":{"notes":{"policy":"user","deadline":"24h","fields":{"/tags":{"policy":"merge"}}}}}
EOF
ferry policy`,
		flags: func(fs *flag.FlagSet) { fs.Bool("json", false, "print {\"fingerprint\",\"set\"}") },
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			set, err := policySet(e.dir)
			if err != nil {
				return err
			}
			if flagBool(fs, "json") {
				return e.printJSON(map[string]any{"fingerprint": set.Fingerprint(), "set": set})
			}
			b, _ := json.MarshalIndent(set, "", "  ")
			fmt.Fprintf(e.stdout, "%s\nfingerprint %s\n", b, set.Fingerprint())
			return nil
		}})

	register(&command{name: "export", args: "FILE [--recipient AGE-RECIPIENT]...", summary: "write an encrypted backup (age format) of every record",
		example: "ferry export backup.age --recipient age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
		flags: func(fs *flag.FlagSet) {
			fs.Var(&listFlag{}, "recipient", "encrypt to this age X25519 recipient (repeatable); without it, to the backup passphrase ($FERRY_BACKUP_PASSPHRASE, else the store passphrase)")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 1); err != nil {
				return err
			}
			opts := storage.ExportOptions{}
			for _, s := range *(fs.Lookup("recipient").Value.(*listFlag)) {
				rec, err := age.ParseX25519Recipient(s)
				if err != nil {
					return usagef("bad recipient %q: %v", s, err)
				}
				opts.Recipients = append(opts.Recipients, rec)
			}
			if len(opts.Recipients) == 0 {
				p, err := e.backupPassphrase()
				if err != nil {
					return err
				}
				opts.Passphrase = p
				if e.fastKDF() {
					opts.ScryptWorkFactor = 10
				}
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				tmp := args[0] + ".partial"
				f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
				if err != nil {
					return err
				}
				pw := &progressIO{show: e.progressPrinter("exported bytes"), w: f}
				st, err := r.Backup(ctx, pw, opts)
				pw.done()
				if e.progress {
					fmt.Fprintln(e.stderr)
				}
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err == nil {
					err = os.Rename(tmp, args[0])
				}
				if err != nil {
					os.Remove(tmp)
					return err
				}
				fmt.Fprintf(e.stdout, "exported %d records to %s (%d bytes)\n", st.Records, args[0], st.Bytes)
				return nil
			})
		}})

	register(&command{name: "import", args: "FILE [--identity AGE-IDENTITY-FILE]", summary: "merge a backup into this store (verified whole first; newer data is never lost)",
		example: "ferry import backup.age",
		flags: func(fs *flag.FlagSet) {
			fs.String("identity", "", "an age identity file for a recipient backup; without it, the backup passphrase")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 1); err != nil {
				return err
			}
			opts := storage.ImportOptions{}
			if idf := flagStr(fs, "identity"); idf != "" {
				b, err := os.ReadFile(idf)
				if err != nil {
					return err
				}
				ids, err := age.ParseIdentities(bytes.NewReader(b))
				if err != nil {
					return inputf("identity file %s: %v", idf, err)
				}
				opts.Identities = ids
			} else {
				p, err := e.backupPassphrase()
				if err != nil {
					return err
				}
				opts.Passphrase = p
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return e.withReplica(ctx, func(r *replica.Replica) error {
				info, _ := f.Stat()
				size := 0
				if info != nil {
					size = int(info.Size())
				}
				pr := &progressIO{show: e.progressPrinter("verified bytes"), r: f, total: size}
				st, err := r.Restore(ctx, pr, opts)
				pr.done()
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "imported %d records: %d new, %d merged, %d unchanged\n", st.Records, st.Created, st.Merged, st.Unchanged)
				return nil
			})
		}})

	register(&command{name: "passwd", args: "", summary: "change the passphrase (atomic: the old or the new one always works)",
		example: "FERRY_NEW_PASSPHRASE=... ferry passwd",
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				var next []byte
				if p := e.getenv("FERRY_NEW_PASSPHRASE"); p != "" {
					next = []byte(p)
				} else {
					var err error
					if next, err = e.prompt("new passphrase", true); err != nil {
						return err
					}
				}
				secret := replica.Secret{Passphrase: next}
				if e.fastKDF() {
					secret.KDF = storage.TestKDF()
				}
				if err := r.ChangePassphrase(ctx, secret); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, "passphrase changed")
				return nil
			})
		}})

	register(&command{name: "rotate-key", args: "", summary: "re-encrypt every value under a new master key (resumes if interrupted)",
		example: "ferry rotate-key",
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				if err := r.RotateKey(ctx, e.progressPrinter("re-encrypted")); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, "master key rotated")
				return nil
			})
		}})
}

// progressIO counts the bytes through a reader or writer and shows them
// (on a terminal only; the printer is silent otherwise), at most every
// 256 KiB.
type progressIO struct {
	show        func(done, total int)
	r           io.Reader
	w           io.Writer
	n, total    int
	lastShownAt int
}

func (p *progressIO) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.add(n)
	return n, err
}

func (p *progressIO) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.add(n)
	return n, err
}

func (p *progressIO) add(n int) {
	p.n += n
	if p.n-p.lastShownAt >= 256<<10 {
		p.lastShownAt = p.n
		p.show(p.n, p.total)
	}
}

func (p *progressIO) done() {
	if p.n != p.lastShownAt {
		p.show(p.n, p.total)
	}
}

func (e *env) backupPassphrase() ([]byte, error) {
	if p := e.getenv("FERRY_BACKUP_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return e.passphrase(false)
}

func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}

func describeEntry(en consent.Entry) string {
	switch {
	case en.Grant != nil:
		return fmt.Sprintf("%s: %s -> %s for %s", en.Grant.ID, en.Grant.Collection, en.Grant.Destination, en.Grant.Purpose)
	case en.Revoke != nil:
		return fmt.Sprintf("%s (%s)", en.Revoke.GrantID, en.Revoke.Reason)
	case en.Share != nil:
		return fmt.Sprintf("%d records, %d bytes of %s -> %s under %s", en.Share.Records, en.Share.Bytes, en.Share.Collection, en.Share.Destination, en.Share.GrantID)
	case en.Answer != nil:
		return fmt.Sprintf("%s to %s for %s: granted=%v", en.Answer.Request.Collection, en.Answer.Request.Destination, en.Answer.Request.Purpose, en.Answer.Granted)
	}
	return ""
}

// skewText describes a writer whose clock runs ahead.
func skewText(sk replica.ClockSkew) string {
	return fmt.Sprintf("clock at least %s ahead (%d writes stamped ahead, last seen %s)",
		sk.Ahead.Round(time.Second), sk.Writes, sk.Seen.UTC().Format(time.RFC3339))
}

// conflictJSON is the stable JSON form of a queued conflict.
type conflictJSON struct {
	ID          string          `json:"id"`
	Collection  string          `json:"collection"`
	Record      string          `json:"record"`
	Path        string          `json:"path"`
	Kind        string          `json:"kind"`
	Provisional int             `json:"provisional"`
	Deadline    jsonTime        `json:"deadline"`
	Fallback    string          `json:"fallback"`
	Candidates  []candidateJSON `json:"candidates"`
}

type candidateJSON struct {
	Index int `json:"index"`
	// Value is in ferry's JSON value form (crdt.EncodeJSON), as 'ferry get'
	// prints it.
	Value   json.RawMessage `json:"value"`
	Deleted bool            `json:"deleted,omitempty"`
	Replica string          `json:"replica"`
	At      jsonTime        `json:"at"`
}

// jsonTime is a time in a conflict listing (a candidate's write time, the
// deadline derived from it). A foreign client can stamp a change with any
// time, including one encoding/json cannot print (years outside
// 0000-9999); such a time is printed as milliseconds since 1970
// ({"$date_ms": n}, as in the value form) instead of failing the listing.
type jsonTime struct{ time.Time }

func (c jsonTime) MarshalJSON() ([]byte, error) {
	if y := c.UTC().Year(); y >= 0 && y <= 9999 {
		return c.Time.MarshalJSON()
	}
	return crdt.EncodeJSON(c.Time)
}

func (c *jsonTime) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return c.Time.UnmarshalJSON(b)
	}
	v, err := crdt.DecodeJSON(b)
	if err != nil {
		return err
	}
	t, ok := v.(time.Time)
	if !ok {
		return fmt.Errorf("want a date, got %s", b)
	}
	c.Time = t
	return nil
}

func toConflictJSON(en policy.Entry) conflictJSON {
	c := conflictJSON{ID: en.ID(), Collection: en.Collection, Record: en.RecordID, Path: en.Conflict.Path,
		Kind: en.Conflict.Kind.String(), Provisional: en.Provisional, Deadline: jsonTime{en.Deadline}, Fallback: string(en.Fallback)}
	for i, cand := range en.Conflict.Candidates {
		v, err := crdt.EncodeJSON(cand.Value)
		if err != nil { // not a value a record holds; show why instead
			v, _ = json.Marshal(fmt.Sprintf("(unprintable: %v)", err))
		}
		c.Candidates = append(c.Candidates, candidateJSON{Index: i, Value: v, Deleted: cand.Deleted,
			Replica: cand.ReplicaID, At: jsonTime{cand.HLC.Time()}})
	}
	return c
}

// expandConflictID accepts a unique prefix of a conflict id.
func expandConflictID(ctx context.Context, r *replica.Replica, prefix string) (string, error) {
	list, err := r.Conflicts(ctx)
	if err != nil {
		return "", err
	}
	var match []string
	for _, en := range list {
		if strings.HasPrefix(en.ID(), prefix) {
			match = append(match, en.ID())
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		// Not open: the replica says whether it was decided, superseded
		// by a newer write (replica.ErrConflictStale) or never existed.
		return prefix, nil
	}
	return "", usagef("%q matches %d conflicts; give more of the id", prefix, len(match))
}
