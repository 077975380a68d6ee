// Command ferry runs, inspects and operates a ferry replica: an encrypted,
// offline-first store of Automerge records that syncs with paired devices.
//
// Usage:
//
//	ferry [--dir DIR] [--passphrase-file FILE] COMMAND [ARGS]
//
// Run `ferry help` for the commands, `ferry COMMAND --help` for one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// Exit codes, one per error class, so scripts can tell them apart. The
// table is printed by `ferry help` and kept in the README and docs.
const (
	exitOK        = 0
	exitError     = 1 // internal error: anything not below
	exitUsage     = 2 // bad command line or invalid input (ErrInvalid of any package, a bad policy file)
	exitWrongKey  = 3 // wrong passphrase or key (store or backup)
	exitNotFound  = 4 // no such record, store, conflict, grant or file
	exitCorrupt   = 5 // corrupted or tampered data, a damaged or truncated backup
	exitNetwork   = 6 // the peer or relay could not be reached, went away mid-session, or timed out
	exitForbidden = 7 // refused: no consent, unknown peer, grant expired, policy mismatch, store locked
	exitNoSpace   = 8 // no space left on the device
	exitProtocol  = 9 // the peer broke ferry's protocol or speaks an incompatible version
)

// exitCodes is `ferry help`'s table of exit codes (the README lists the same).
var exitCodes = []struct {
	code int
	what string
}{
	{exitOK, "ok"},
	{exitError, "internal error"},
	{exitUsage, "usage: bad command line or invalid input (e.g. a bad ferry-policy.json)"},
	{exitWrongKey, "wrong passphrase or key (store or backup)"},
	{exitNotFound, "not found (record, store, conflict, grant, file)"},
	{exitCorrupt, "corrupted or tampered data (store or backup)"},
	{exitNetwork, "network failure: peer unreachable, gone mid-session, timeout"},
	{exitForbidden, "refused: no consent, unknown peer, grant expired, policy mismatch, store locked"},
	{exitNoSpace, "no space left on the device"},
	{exitProtocol, "protocol violation by the peer, or an incompatible version"},
}

// usageError marks a bad command line (exit 2, followed by the command's
// synopsis), or with input set, other invalid input from the user (a file's
// content, the environment): exit 2 without the synopsis.
type usageError struct {
	msg   string
	input bool
}

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{msg: fmt.Sprintf(format, args...)} }

// inputf reports invalid input that is not the command line's fault.
func inputf(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...), input: true}
}

// exitCode maps an error to its exit code. The cases are tried in order:
// an error that wraps several sentinels (a peer's refusal wraps the
// refusal's own class) takes the first.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, storage.ErrNoSpace):
		return exitNoSpace
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp), errors.Is(err, replica.ErrInvalid),
		errors.Is(err, storage.ErrInvalid), errors.Is(err, relay.ErrInvalid),
		errors.Is(err, crdt.ErrBadPath), errors.Is(err, crdt.ErrUnsupportedValue), errors.Is(err, policy.ErrBadPolicy),
		errors.Is(err, consent.ErrInvalid), errors.Is(err, consent.ErrUnknownPurpose),
		errors.Is(err, syscall.EISDIR), // a directory named where a file is wanted
		isBadAddress(err):
		return exitUsage
	case errors.Is(err, storage.ErrWrongKey), isNoIdentityMatch(err):
		return exitWrongKey
	case errors.Is(err, replica.ErrNotFound), errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrNoStore),
		errors.Is(err, replica.ErrNoConflict), errors.Is(err, consent.ErrNoGrant), errors.Is(err, os.ErrNotExist),
		errors.Is(err, replica.ErrUnknownSpace), errors.Is(err, syscall.ENOTDIR):
		return exitNotFound
	case errors.Is(err, storage.ErrCorrupt), errors.Is(err, storage.ErrBadBackup), errors.Is(err, consent.ErrTampered),
		errors.Is(err, crdt.ErrBadDocument), errors.Is(err, relay.ErrTampered), errors.Is(err, relay.ErrMissing), errors.Is(err, relay.ErrInvitation):
		return exitCorrupt
	case errors.Is(err, replica.ErrNoConsent), errors.Is(err, replica.ErrPolicyMismatch), errors.Is(err, transport.ErrUnknownPeer),
		errors.Is(err, storage.ErrLocked), errors.Is(err, storage.ErrExists), errors.Is(err, consent.ErrDeclined),
		errors.Is(err, relay.ErrAuth), errors.Is(err, relay.ErrNotMember), errors.Is(err, relay.ErrQuota),
		errors.Is(err, replica.ErrConflictStale):
		return exitForbidden
	case errors.Is(err, replica.ErrProtocol), errors.Is(err, replica.ErrVersionMismatch), errors.Is(err, replica.ErrIdentityMismatch),
		errors.Is(err, relay.ErrProtocol), errors.Is(err, transport.ErrFrameTooLarge), errors.Is(err, transport.ErrNotFerry):
		return exitProtocol
	case errors.Is(err, replica.ErrDisconnected), errors.Is(err, transport.ErrRefused), errors.Is(err, transport.ErrCut),
		errors.Is(err, transport.ErrClosed), errors.Is(err, context.DeadlineExceeded), errors.Is(err, relay.ErrUnavailable),
		isNetErr(err):
		return exitNetwork
	}
	return exitError
}

// env is what every command gets: global options and the standard streams.
type env struct {
	dir            string
	passphraseFile string
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// interactive reports whether stdin is a terminal (prompts are allowed).
	interactive bool
	// progress reports whether stderr is a terminal (progress is shown).
	progress bool
}

type command struct {
	name    string
	args    string // synopsis of the arguments
	summary string
	example string
	run     func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error
	flags   func(fs *flag.FlagSet)
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) (code int) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "ferry: internal error: %v\n", p)
			code = exitError
		}
	}()
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv,
		interactive: isTerminal(stdin), progress: isTerminal(stderr)}
	global := flag.NewFlagSet("ferry", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.StringVar(&e.dir, "dir", "", "store directory (default $FERRY_DIR or ./ferry-data)")
	global.StringVar(&e.passphraseFile, "passphrase-file", "", "read the passphrase from FILE (default $FERRY_PASSPHRASE, else prompt)")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // ferry -h, ferry --help
			printUsage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "ferry: %s (see 'ferry help')\n", oneLine(err))
		return exitUsage
	}
	if e.dir == "" {
		e.dir = getenv("FERRY_DIR")
	}
	if e.dir == "" {
		e.dir = "ferry-data"
	}
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" || rest[0] == "--help" || rest[0] == "-h" {
		if len(rest) > 1 {
			if c := commands[rest[1]]; c != nil {
				printCommandHelp(stdout, c, newFlagSet(c))
				return exitOK
			}
			fmt.Fprintf(stderr, "ferry: unknown command %q (see 'ferry help')\n", rest[1])
			return exitUsage
		}
		if len(rest) == 0 {
			// No command: the overview on stderr, as a usage error.
			printUsage(stderr)
			return exitUsage
		}
		printUsage(stdout)
		return exitOK
	}
	c := commands[rest[0]]
	if c == nil {
		fmt.Fprintf(stderr, "ferry: unknown command %q (see 'ferry help')\n", rest[0])
		return exitUsage
	}
	fs := newFlagSet(c)
	positional, err := parseInterleaved(fs, rest[1:])
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(stdout, c, fs)
		return exitOK
	}
	if err == nil {
		err = c.run(ctx, e, fs, positional)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferry %s: %s\n", c.name, oneLine(err))
		// The synopsis helps with a bad command line only, not with bad
		// input found later (a policy file, a value).
		var ue usageError
		if errors.As(err, &ue) && !ue.input {
			fmt.Fprintf(stderr, "usage: ferry %s %s\n", c.name, c.args)
		}
		return exitCode(err)
	}
	return exitOK
}

func newFlagSet(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if c.flags != nil {
		c.flags(fs)
	}
	return fs
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments ("trust FP --collections notes").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{msg: err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, nil
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "ferry: an encrypted, offline-first replica that syncs with your other devices.")
	fmt.Fprintln(w, "\nusage: ferry [--dir DIR] [--passphrase-file FILE] COMMAND [ARGS]")
	fmt.Fprintln(w, "\nThe store is DIR, $FERRY_DIR or ./ferry-data; the passphrase comes from --passphrase-file,")
	fmt.Fprintln(w, "$FERRY_PASSPHRASE, or a prompt without echo.\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nexit codes (a failure prints one line on stderr, and a bad command line the command's synopsis):")
	for _, c := range exitCodes {
		fmt.Fprintf(w, "  %d  %s\n", c.code, c.what)
	}
	fmt.Fprintln(w, "\n'ferry COMMAND --help' shows a command's flags and an example; 'ferry' alone prints this")
	fmt.Fprintln(w, "on stderr and exits 2.")
}

func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: ferry %s %s\n\n%s\n", c.name, c.args, c.summary)
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintln(w, "\nflags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if c.example != "" {
		fmt.Fprintf(w, "\nexample:\n  %s\n", strings.ReplaceAll(c.example, "\n", "\n  "))
	}
}

// policySet reads the store's policy file, or the default set.
func policySet(dir string) (*policy.Set, error) {
	set, err := policy.LoadFile(policyPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return policy.NewSet(policy.Rule{Policy: policy.Timestamp}), nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", policyPath(dir), err)
	}
	return set, nil
}
