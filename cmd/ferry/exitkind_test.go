package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/collector"
	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/privacy/anon"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// sentinelCodes is every exported sentinel of every package, keyed
// "package.Name", with the exit code it had when exitCode was a switch
// over the sentinels themselves (measured then): moving to kinds changed
// no sentinel's class. A sentinel with code 1 has no kind.
var sentinelCodes = map[string]struct {
	err  error
	code int
}{
	"storage.ErrWrongKey":  {storage.ErrWrongKey, exitWrongKey},
	"storage.ErrCorrupt":   {storage.ErrCorrupt, exitCorrupt},
	"storage.ErrNotFound":  {storage.ErrNotFound, exitNotFound},
	"storage.ErrClosed":    {storage.ErrClosed, exitError},
	"storage.ErrLocked":    {storage.ErrLocked, exitForbidden},
	"storage.ErrExists":    {storage.ErrExists, exitForbidden},
	"storage.ErrNoStore":   {storage.ErrNoStore, exitNotFound},
	"storage.ErrBadBackup": {storage.ErrBadBackup, exitCorrupt},
	"storage.ErrInvalid":   {storage.ErrInvalid, exitUsage},
	"storage.ErrNoSpace":   {storage.ErrNoSpace, exitNoSpace},
	// a store header of a newer format version
	"storage.ErrNewerStore": {storage.ErrNewerStore, exitProtocol},

	"replica.ErrProtocol":         {replica.ErrProtocol, exitProtocol},
	"replica.ErrNotFound":         {replica.ErrNotFound, exitNotFound},
	"replica.ErrClosed":           {replica.ErrClosed, exitError},
	"replica.ErrInvalid":          {replica.ErrInvalid, exitUsage},
	"replica.ErrNoConflict":       {replica.ErrNoConflict, exitNotFound},
	"replica.ErrConflictStale":    {replica.ErrConflictStale, exitForbidden},
	"replica.ErrPolicyMismatch":   {replica.ErrPolicyMismatch, exitForbidden},
	"replica.ErrVersionMismatch":  {replica.ErrVersionMismatch, exitProtocol},
	"replica.ErrIdentityMismatch": {replica.ErrIdentityMismatch, exitProtocol},
	"replica.ErrPeerError":        {replica.ErrPeerError, exitError},
	"replica.ErrNoConsent":        {replica.ErrNoConsent, exitForbidden},
	"replica.ErrDisconnected":     {replica.ErrDisconnected, exitNetwork},
	"replica.ErrUnknownSpace":     {replica.ErrUnknownSpace, exitNotFound},
	"replica.ErrSpaceRemoved":     {replica.ErrSpaceRemoved, exitForbidden},
	"replica.ErrUnknownMember":    {replica.ErrUnknownMember, exitNotFound},

	"crdt.ErrUnsupportedValue": {crdt.ErrUnsupportedValue, exitUsage},
	"crdt.ErrNotFound":         {crdt.ErrNotFound, exitError},
	"crdt.ErrBadPath":          {crdt.ErrBadPath, exitUsage},
	"crdt.ErrBadDocument":      {crdt.ErrBadDocument, exitCorrupt},
	"crdt.ErrClockSkew":        {crdt.ErrClockSkew, exitError},
	"crdt.ErrBadActor":         {crdt.ErrBadActor, exitError},
	"crdt.ErrMissingDeps":      {crdt.ErrMissingDeps, exitError},
	"crdt.ErrActorClash":       {crdt.ErrActorClash, exitUsage},

	"policy.ErrBadPolicy":   {policy.ErrBadPolicy, exitUsage},
	"policy.ErrStale":       {policy.ErrStale, exitError},
	"policy.ErrNoEntry":     {policy.ErrNoEntry, exitError},
	"policy.ErrNoCandidate": {policy.ErrNoCandidate, exitError}, // bare: no kind, as on main; replica wraps it in ErrInvalid (exit 2)

	"consent.ErrTampered":       {consent.ErrTampered, exitCorrupt},
	"consent.ErrUnknownPurpose": {consent.ErrUnknownPurpose, exitUsage},
	"consent.ErrNoGrant":        {consent.ErrNoGrant, exitNotFound},
	"consent.ErrInvalid":        {consent.ErrInvalid, exitUsage},
	"consent.ErrDeclined":       {consent.ErrDeclined, exitForbidden},

	"anon.ErrBadRules":  {anon.ErrBadRules, exitError},
	"anon.ErrBadSecret": {anon.ErrBadSecret, exitError},
	"anon.ErrBadEpoch":  {anon.ErrBadEpoch, exitError},
	"anon.ErrRandom":    {anon.ErrRandom, exitError},

	"transport.ErrFrameTooLarge": {transport.ErrFrameTooLarge, exitProtocol},
	"transport.ErrClosed":        {transport.ErrClosed, exitNetwork},
	"transport.ErrUnknownPeer":   {transport.ErrUnknownPeer, exitForbidden},
	"transport.ErrRefused":       {transport.ErrRefused, exitNetwork},
	"transport.ErrCut":           {transport.ErrCut, exitNetwork},
	"transport.ErrNotFerry":      {transport.ErrNotFerry, exitProtocol},

	"relay.ErrTampered":    {relay.ErrTampered, exitCorrupt},
	"relay.ErrMissing":     {relay.ErrMissing, exitCorrupt},
	"relay.ErrQuota":       {relay.ErrQuota, exitForbidden},
	"relay.ErrAuth":        {relay.ErrAuth, exitForbidden},
	"relay.ErrNotMember":   {relay.ErrNotMember, exitForbidden},
	"relay.ErrConflict":    {relay.ErrConflict, exitError},
	"relay.ErrProtocol":    {relay.ErrProtocol, exitProtocol},
	"relay.ErrUnavailable": {relay.ErrUnavailable, exitNetwork},
	"relay.ErrInvalid":     {relay.ErrInvalid, exitUsage},
	"relay.ErrInvitation":  {relay.ErrInvitation, exitCorrupt},
	"relay.ErrNoKey":       {relay.ErrNoKey, exitForbidden},
	"relay.ErrRemoved":     {relay.ErrRemoved, exitForbidden},

	"collector.ErrBadBatch":       {collector.ErrBadBatch, exitError},
	"collector.ErrTooLarge":       {collector.ErrTooLarge, exitError},
	"collector.ErrRejected":       {collector.ErrRejected, exitError},
	"collector.ErrGaveUp":         {collector.ErrGaveUp, exitError},
	"collector.ErrBadDestination": {collector.ErrBadDestination, exitError},
	"collector.ErrBadOptions":     {collector.ErrBadOptions, exitError},
}

// TestSentinelExitCodes: every sentinel, bare and wrapped, exits with the
// code it always had, and has at most one kind.
func TestSentinelExitCodes(t *testing.T) {
	for name, s := range sentinelCodes {
		for _, err := range []error{s.err, fmt.Errorf("op: %w", s.err)} {
			if got := exitCode(err); got != s.code {
				t.Errorf("exitCode(%s) = %d, want %d", name, got, s.code)
			}
		}
		var kinds []string
		for _, k := range errkind.Kinds {
			if errors.Is(s.err, k) {
				kinds = append(kinds, k.Error())
			}
		}
		if len(kinds) > 1 {
			t.Errorf("%s has kinds %v", name, kinds)
		}
		if (len(kinds) == 0) != (s.code == exitError) {
			t.Errorf("%s: kinds %v with exit code %d", name, kinds, s.code)
		}
	}
}

// TestSentinelsListed: sentinelCodes names every exported Err variable of
// every package in the module (found by parsing the source), so a new
// sentinel is checked for a kind.
func TestSentinelsListed(t *testing.T) {
	fset := token.NewFileSet()
	var found []string
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") && path != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if f.Name.Name == "main" {
			return nil
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				for _, n := range spec.(*ast.ValueSpec).Names {
					if strings.HasPrefix(n.Name, "Err") && n.IsExported() {
						found = append(found, f.Name.Name+"."+n.Name)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(found)
	seen := map[string]bool{}
	for _, name := range found {
		seen[name] = true
		if _, ok := sentinelCodes[name]; !ok {
			t.Errorf("%s is not in sentinelCodes: give it a kind (errkind.New) and list it", name)
		}
	}
	for name := range sentinelCodes {
		if !seen[name] {
			t.Errorf("sentinelCodes lists %s, which the source no longer declares", name)
		}
	}
	if len(found) < 60 {
		t.Errorf("found only %d sentinels: the source walk is broken", len(found))
	}
}
