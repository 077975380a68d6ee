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

	"github.com/ferrysync/ferry/errkind"
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

// exitKinds maps error kinds to exit codes. Every package's sentinels
// carry their kind (package errkind), so a new sentinel needs no change
// here; a row's also names the outside errors (the standard library's, the
// CLI's own) of its class. The rows are tried in order: an error that wraps
// several kinds (a peer's refusal wraps the refusal's own class) takes the
// first.
var exitKinds = []struct {
	kind error
	code int
	also func(error) bool // outside errors of the same class
}{
	{errkind.NoSpace, exitNoSpace, nil},
	{errkind.Invalid, exitUsage, func(err error) bool {
		var ue usageError
		return errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) ||
			errors.Is(err, syscall.EISDIR) || // a directory named where a file is wanted
			isBadAddress(err)
	}},
	{errkind.WrongKey, exitWrongKey, isNoIdentityMatch},
	{errkind.NotFound, exitNotFound, func(err error) bool {
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
	}},
	{errkind.Corrupt, exitCorrupt, nil},
	{errkind.Forbidden, exitForbidden, nil},
	{errkind.Protocol, exitProtocol, nil},
	{errkind.Unavailable, exitNetwork, func(err error) bool {
		return errors.Is(err, context.DeadlineExceeded) || isNetErr(err)
	}},
}

// exitCode maps an error to its exit code (exitKinds), exitError for an
// error of no kind.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	for _, k := range exitKinds {
		if errors.Is(err, k.kind) || (k.also != nil && k.also(err)) {
			return k.code
		}
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

// A command is one `ferry COMMAND`: its help text, and new, which makes the
// command's typed struct with its flags bound to fs. Each command (or
// group of subcommands) lives in its own file with its struct and its Run
// method beside this text.
type command struct {
	name    string
	args    string // synopsis of the arguments
	summary string
	example string
	new     func(e *env, fs *flag.FlagSet) runner
}

// runner is a command whose flags are parsed into its fields; Run gets the
// positional arguments.
type runner interface {
	Run(ctx context.Context, args []string) error
}

// commands is every command by name.
var commands = map[string]*command{}

func init() {
	for _, c := range []*command{
		initCmd, idCmd, passwdCmd, rotateKeyCmd, // store.go
		putCmd, getCmd, delCmd, listCmd, docCmd, // record.go
		trustCmd, untrustCmd, // trust.go
		consentCmd,                   // consent.go
		serveCmd, syncCmd, statusCmd, // sync.go
		conflictsCmd, resolveCmd, // conflicts.go
		policyCmd,            // policy.go
		exportCmd, importCmd, // backup.go
		relayCmd, spaceCmd, // relay.go, space.go
		shareCmd, // share.go
		demoCmd,  // demo.go
	} {
		commands[c.name] = c
	}
}

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
				fs, _ := newFlagSet(c, e)
				printCommandHelp(stdout, c, fs)
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
	fs, cmd := newFlagSet(c, e)
	positional, err := parseInterleaved(fs, rest[1:])
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(stdout, c, fs)
		return exitOK
	}
	if err == nil {
		err = cmd.Run(ctx, positional)
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

// newFlagSet makes c's command struct with its flags bound to a new flag set.
func newFlagSet(c *command, e *env) (*flag.FlagSet, runner) {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, c.new(e, fs)
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
