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
	"github.com/ferrysync/ferry/policy/consent"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
	"github.com/ferrysync/ferry/transport/relay"
)

// Exit codes. Each error class has its own, so scripts can tell them apart.
const (
	exitOK        = 0
	exitError     = 1 // anything not below
	exitUsage     = 2 // bad command line
	exitWrongKey  = 3 // wrong passphrase or key
	exitNotFound  = 4 // no such record, store, conflict or grant
	exitCorrupt   = 5 // corrupted or tampered data, bad backup
	exitNetwork   = 6 // the peer or relay could not be reached, or the session broke
	exitForbidden = 7 // refused: no consent, unknown peer, policy mismatch, store locked
	exitNoSpace   = 8 // no space left on the device
)

// usageError marks a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitCode maps an error to its exit code.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp), errors.Is(err, replica.ErrInvalid),
		errors.Is(err, crdt.ErrBadPath), errors.Is(err, crdt.ErrUnsupportedValue), errors.Is(err, policy.ErrBadPolicy),
		errors.Is(err, consent.ErrInvalid), errors.Is(err, consent.ErrUnknownPurpose):
		return exitUsage
	case errors.Is(err, storage.ErrWrongKey):
		return exitWrongKey
	case errors.Is(err, storage.ErrNoSpace):
		return exitNoSpace
	case errors.Is(err, replica.ErrNotFound), errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrNoStore),
		errors.Is(err, replica.ErrNoConflict), errors.Is(err, consent.ErrNoGrant), errors.Is(err, os.ErrNotExist),
		errors.Is(err, replica.ErrUnknownSpace):
		return exitNotFound
	case errors.Is(err, storage.ErrCorrupt), errors.Is(err, storage.ErrBadBackup), errors.Is(err, consent.ErrTampered),
		errors.Is(err, crdt.ErrBadDocument), errors.Is(err, relay.ErrTampered), errors.Is(err, relay.ErrMissing), errors.Is(err, relay.ErrInvitation):
		return exitCorrupt
	case errors.Is(err, replica.ErrNoConsent), errors.Is(err, replica.ErrPolicyMismatch), errors.Is(err, transport.ErrUnknownPeer),
		errors.Is(err, storage.ErrLocked), errors.Is(err, storage.ErrExists), errors.Is(err, consent.ErrDeclined),
		errors.Is(err, relay.ErrAuth), errors.Is(err, relay.ErrNotMember), errors.Is(err, relay.ErrQuota):
		return exitForbidden
	case errors.Is(err, transport.ErrRefused), errors.Is(err, transport.ErrCut), errors.Is(err, transport.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, replica.ErrProtocol), errors.Is(err, replica.ErrPeerError),
		errors.Is(err, relay.ErrUnavailable),
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
		fmt.Fprintf(stderr, "ferry: %v (see 'ferry help')\n", err)
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
		}
		printUsage(stdout)
		if len(rest) == 0 {
			return exitUsage
		}
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
		if exitCode(err) == exitUsage {
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
			return nil, usageError{err.Error()}
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
	fmt.Fprintln(w, "\nexit codes: 0 ok, 1 error, 2 usage, 3 wrong passphrase, 4 not found, 5 corrupted data,")
	fmt.Fprintln(w, "            6 network failure, 7 refused (consent, unknown peer, policy mismatch, locked)")
	fmt.Fprintln(w, "\n'ferry COMMAND --help' shows a command's flags and an example.")
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
	return set, err
}
