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
	"strings"
	"syscall"
	"time"

	"github.com/ferrysync/ferry/crdt"
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

// withReplicaArgs checks that there are n positional arguments, then
// runs fn on the open replica (withReplica).
func (e *env) withReplicaArgs(ctx context.Context, args []string, n int, fn func(r *replica.Replica) error) error {
	if err := needArgs(args, n); err != nil {
		return err
	}
	return e.withReplica(ctx, fn)
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

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// collectionFlags holds --collections (comma-separated, each name
// trimmed: the short form for plain names) and --collection (repeatable,
// one name verbatim: for names with a comma or leading or trailing
// spaces, which are valid collection names).
type collectionFlags struct {
	list string   // --collections
	each listFlag // --collection, verbatim
}

// bind registers the two flags on fs; what completes their help text.
func (c *collectionFlags) bind(fs *flag.FlagSet, what string) {
	fs.StringVar(&c.list, "collections", "", "comma-separated collections "+what)
	fs.Var(&c.each, "collection", "one collection "+what+", taken verbatim (repeatable; for names with ',' or edge spaces)")
}

// names returns the collections named by both flags.
func (c *collectionFlags) names() []string {
	return append(splitList(c.list), c.each...)
}

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

func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}
