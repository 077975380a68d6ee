package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"golang.org/x/term"
)

func isTerminal(f any) bool {
	if x, ok := f.(*os.File); ok {
		return term.IsTerminal(int(x.Fd()))
	}
	return false
}

// isNetErr reports a network failure: an error of the net package or the
// HTTP client (*net.OpError, *net.DNSError, *url.Error, timeouts). A bare
// syscall.Errno also implements net.Error, so a file system error (a
// *fs.PathError around EISDIR, ENOTDIR, EACCES...) would pass for one;
// an errno counts only when it is a network errno.
func isNetErr(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) {
		return false
	}
	if errno, ok := ne.(syscall.Errno); ok {
		return isNetErrno(errno)
	}
	return true
}

// isBadAddress reports a malformed network address ("host" without a
// port, port 99999, "ftp://host:1" as a TLS address): the user's input,
// not a network failure, though the net package's *net.AddrError is a
// net.Error.
func isBadAddress(err error) bool {
	var ae *net.AddrError
	var un net.UnknownNetworkError
	return errors.As(err, &ae) || errors.As(err, &un)
}

// isNetErrno reports the errnos of a failed connection.
func isNetErrno(errno syscall.Errno) bool {
	switch errno {
	case syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.ETIMEDOUT,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ENETDOWN, syscall.ENETRESET:
		return true
	}
	return false
}

func policyPath(dir string) string { return filepath.Join(dir, "ferry-policy.json") }

func configPath(dir string) string { return filepath.Join(dir, "ferry-replica.json") }

// replicaConfig is this replica's non-secret settings, kept beside the
// store: its name and its priority for the priority policy.
type replicaConfig struct {
	Name     string `json:"name,omitempty"`
	Priority int    `json:"priority,omitempty"`
}

func readConfig(dir string) (replicaConfig, error) {
	var c replicaConfig
	b, err := os.ReadFile(configPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", configPath(dir), err)
	}
	return c, nil
}

// fastKDF reports whether FERRY_KDF=fast asks for cheap key derivation
// (tests and the demo only: it weakens a stolen store's protection).
func (e *env) fastKDF() bool { return e.getenv("FERRY_KDF") == "fast" }

// passphrase returns the store passphrase from --passphrase-file,
// $FERRY_PASSPHRASE, or a prompt (twice when confirm is set).
func (e *env) passphrase(confirm bool) ([]byte, error) {
	if e.passphraseFile != "" {
		return readSecretFile(e.passphraseFile)
	}
	if p := e.getenv("FERRY_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return e.prompt("passphrase", confirm)
}

func readSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, inputf("passphrase file %s is empty", path)
	}
	return line, nil
}

func (e *env) prompt(what string, confirm bool) ([]byte, error) {
	f, ok := e.stdin.(*os.File)
	if !ok || !e.interactive {
		return nil, inputf("no %s: set $FERRY_PASSPHRASE or --passphrase-file (no terminal to ask on)", what)
	}
	fmt.Fprintf(e.stderr, "%s: ", what)
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(p) == 0 {
		return nil, inputf("empty %s", what)
	}
	if confirm {
		fmt.Fprintf(e.stderr, "%s again: ", what)
		q, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		if !bytes.Equal(p, q) {
			return nil, inputf("the two %ss differ", what)
		}
	}
	return p, nil
}

// open opens the replica in the store directory.
func (e *env) open(ctx context.Context) (*replica.Replica, error) {
	if _, err := os.Stat(e.dir); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no store in %s (run 'ferry init'): %w", e.dir, storage.ErrNoStore)
	}
	set, err := policySet(e.dir)
	if err != nil {
		return nil, err
	}
	pass, err := e.passphrase(false)
	if err != nil {
		return nil, err
	}
	cfg, err := readConfig(e.dir)
	if err != nil {
		return nil, err
	}
	opts := replica.Options{Passphrase: pass, Policies: set, Name: cfg.Name, Priority: cfg.Priority}
	if off := e.getenv("FERRY_TEST_CLOCK_OFFSET"); off != "" {
		// For trying clock-skew handling: this process's clock runs off
		// by the given duration ("24h", "-90m").
		d, err := time.ParseDuration(off)
		if err != nil {
			return nil, usagef("FERRY_TEST_CLOCK_OFFSET: %v", err)
		}
		opts.Now = func() time.Time { return time.Now().Add(d) }
	}
	r, err := replica.OpenExisting(ctx, e.dir, opts)
	if errors.Is(err, storage.ErrNoStore) {
		return nil, fmt.Errorf("no store in %s (run 'ferry init'): %w", e.dir, err)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// withReplica opens the replica, runs fn and closes it.
func (e *env) withReplica(ctx context.Context, fn func(r *replica.Replica) error) error {
	r, err := e.open(ctx)
	if err != nil {
		return err
	}
	err = fn(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return err
}

func needArgs(args []string, n int) error {
	if len(args) != n {
		return usagef("want %d argument(s), got %d", n, len(args))
	}
	return nil
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseJSONObject reads a JSON object in ferry's value form
// (crdt.DecodeJSON: exact integers, tagged bytes and dates, nothing after
// the value).
func parseJSONObject(s string) (map[string]any, error) {
	v, err := crdt.DecodeJSON([]byte(s))
	if err != nil {
		return nil, usagef("bad JSON: %v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, usagef("want a JSON object, got %s", s)
	}
	return m, nil
}

// parseJSONValue reads one JSON value in ferry's value form.
func parseJSONValue(s string) (any, error) {
	v, err := crdt.DecodeJSON([]byte(s))
	if err != nil {
		return nil, usagef("bad JSON value: %v", err)
	}
	return v, nil
}

// printValue prints a record value in ferry's JSON form (crdt.EncodeJSON),
// indented like printJSON.
func (e *env) printValue(v any) error {
	b, err := crdt.EncodeJSON(v)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = e.stdout.Write(out.Bytes())
	return err
}

// collectionFlags registers --collections (comma-separated, each name
// trimmed: the short form for plain names) and --collection (repeatable,
// one name verbatim: for names with a comma or leading or trailing
// spaces, which are valid collection names).
func collectionFlags(fs *flag.FlagSet, what string) {
	fs.String("collections", "", "comma-separated collections "+what)
	fs.Var(&listFlag{}, "collection", "one collection "+what+", taken verbatim (repeatable; for names with ',' or edge spaces)")
}

// collectionsOf returns the collections named by collectionFlags' flags.
func collectionsOf(fs *flag.FlagSet) []string {
	out := splitList(fs.Lookup("collections").Value.String())
	return append(out, *fs.Lookup("collection").Value.(*listFlag)...)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func init() {
	register(&command{name: "init", args: "[--name NAME] [--priority N] [--policy FILE]",
		summary: "create an encrypted store (asks for the passphrase twice on a terminal)",
		example: "FERRY_DIR=~/notes-a ferry init --name laptop",
		flags: func(fs *flag.FlagSet) {
			fs.String("name", "", "a human-readable name for this replica")
			fs.Int("priority", 0, "this replica's priority for the priority conflict policy (higher wins)")
			fs.String("policy", "", "copy this conflict policy file into the store (see 'ferry policy --help')")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			var policyBytes []byte
			if pf := fs.Lookup("policy").Value.String(); pf != "" {
				b, err := os.ReadFile(pf)
				if err != nil {
					return err
				}
				if _, err := parsePolicy(b); err != nil {
					return err
				}
				policyBytes = b
			}
			pass, err := e.passphrase(true)
			if err != nil {
				return err
			}
			prio, _ := strconv.Atoi(flagStr(fs, "priority"))
			cfg := replicaConfig{Name: flagStr(fs, "name"), Priority: prio}
			opts := replica.Options{Passphrase: pass, Name: cfg.Name, Priority: cfg.Priority}
			if e.fastKDF() {
				opts.KDF = storage.TestKDF()
			}
			if err := os.MkdirAll(e.dir, 0o700); err != nil {
				return err
			}
			r, err := replica.Create(ctx, e.dir, opts)
			if err != nil {
				return err
			}
			cb, _ := json.Marshal(cfg)
			if err := os.WriteFile(configPath(e.dir), cb, 0o600); err != nil {
				r.Close()
				return err
			}
			if policyBytes != nil {
				if err := os.WriteFile(policyPath(e.dir), policyBytes, 0o600); err != nil {
					r.Close()
					return err
				}
			}
			fmt.Fprintf(e.stdout, "created %s\nreplica id %s\n", e.dir, r.ID())
			return r.Close()
		}})

	register(&command{name: "id", args: "", summary: "print this replica's identity fingerprint",
		example: "ferry id",
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				fmt.Fprintln(e.stdout, r.ID())
				return nil
			})
		}})

	register(&command{name: "put", args: "COLLECTION ID JSON", summary: "merge a JSON object's fields into a record",
		example: `ferry put notes groceries '{"title":"Groceries","items":["milk"]}'`,
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if err := needArgs(args, 3); err != nil {
				return err
			}
			fields, err := parseJSONObject(args[2])
			if err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error { return r.Put(ctx, args[0], args[1], fields) })
		}})

	register(&command{name: "get", args: "COLLECTION ID", summary: "print a record as JSON",
		example: "ferry get notes groceries",
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if err := needArgs(args, 2); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				m, err := r.Get(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return e.printValue(m)
			})
		}})

	register(&command{name: "del", args: "COLLECTION ID", summary: "delete a record (the deletion syncs)",
		example: "ferry del notes groceries",
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if err := needArgs(args, 2); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error { return r.Delete(ctx, args[0], args[1]) })
		}})

	register(&command{name: "list", args: "COLLECTION [--json] [--order id|updated] [--limit N]",
		summary: "list a collection's records (id and last update)",
		example: "ferry list notes --order updated --limit 10",
		flags: func(fs *flag.FlagSet) {
			fs.Bool("json", false, "print JSON: {\"items\":[{\"id\",\"created\",\"updated\"}],\"next\"}")
			fs.String("order", "id", "sort by id or updated (newest first)")
			fs.Int("limit", 0, "at most N records")
			fs.String("after", "", "continue after this cursor (the 'next' of a previous --json page)")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 1); err != nil {
				return err
			}
			opts := replica.ListOptions{After: fs.Lookup("after").Value.String()}
			opts.Limit, _ = strconv.Atoi(fs.Lookup("limit").Value.String())
			switch fs.Lookup("order").Value.String() {
			case "id":
			case "updated":
				opts.Order = replica.ByUpdated
			default:
				return usagef("--order is id or updated")
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				page, err := r.List(ctx, args[0], opts)
				if err != nil {
					return err
				}
				if fs.Lookup("json").Value.String() == "true" {
					if page.Items == nil {
						page.Items = []replica.RecordInfo{}
					}
					return e.printJSON(page)
				}
				for _, it := range page.Items {
					fmt.Fprintf(e.stdout, "%s\t%s\n", it.ID, it.Updated.UTC().Format(time.RFC3339))
				}
				return nil
			})
		}})

	register(&command{name: "doc", args: "export COLLECTION ID FILE | import COLLECTION ID FILE",
		summary: "write a record as a standard .automerge file, or merge one in",
		example: "ferry doc export notes groceries groceries.automerge",
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if len(args) != 4 || (args[0] != "export" && args[0] != "import") {
				return usagef("want export|import COLLECTION ID FILE")
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				if args[0] == "export" {
					b, err := r.ExportDoc(ctx, args[1], args[2])
					if err != nil {
						return err
					}
					return os.WriteFile(args[3], b, 0o600)
				}
				b, err := os.ReadFile(args[3])
				if err != nil {
					return err
				}
				n, err := r.ImportDoc(ctx, args[1], args[2], b)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "merged %s into %s/%s (%d conflicts)\n", args[3], args[1], args[2], n)
				return nil
			})
		}})

	register(&command{name: "trust", args: "FINGERPRINT --collections A,B [--expires DURATION]",
		summary: "pair a peer: grant it device-sync of the named collections",
		example: "ferry trust $(FERRY_DIR=../phone ferry id) --collections notes,todo",
		flags: func(fs *flag.FlagSet) {
			collectionFlags(fs, "the peer may sync")
			fs.String("purpose", consent.PurposeDeviceSync, "the purpose (only device-sync pairs a peer)")
			fs.Duration("expires", 0, "the grant lapses after this long (default: until revoked)")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 1); err != nil {
				return err
			}
			colls := collectionsOf(fs)
			if len(colls) == 0 {
				return usagef("--collections (or --collection) is required")
			}
			if p := fs.Lookup("purpose").Value.String(); p != consent.PurposeDeviceSync {
				return usagef("trust pairs for device-sync; use 'ferry consent grant' for purpose %q", p)
			}
			exp, _ := time.ParseDuration(fs.Lookup("expires").Value.String())
			return e.withReplica(ctx, func(r *replica.Replica) error {
				gs, err := r.Pair(ctx, args[0], colls, exp)
				if err != nil {
					return err
				}
				for _, g := range gs {
					fmt.Fprintf(e.stdout, "granted %s: %s to %s for %s\n", g.ID, g.Collection, g.Destination, g.Purpose)
				}
				return nil
			})
		}})

	register(&command{name: "untrust", args: "FINGERPRINT", summary: "revoke every grant a peer holds",
		example: "ferry untrust 5ul3naxq...",
		run: func(ctx context.Context, e *env, _ *flag.FlagSet, args []string) error {
			if err := needArgs(args, 1); err != nil {
				return err
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				n, err := r.Unpair(ctx, args[0])
				if err != nil {
					return err
				}
				if n == 0 {
					return fmt.Errorf("%s holds no grant: %w", args[0], consent.ErrNoGrant)
				}
				fmt.Fprintf(e.stdout, "revoked %d grant(s)\n", n)
				return nil
			})
		}})
}

// parsePolicy validates a policy file's bytes.
func parsePolicy(b []byte) (any, error) {
	set, err := parsePolicySet(b)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	return set, nil
}
