package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferrysync/ferry/collector"
	"github.com/ferrysync/ferry/internal/names"
	"github.com/ferrysync/ferry/privacy/anon"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/replica"
)

func shareRulesPath(dir string) string { return filepath.Join(dir, "ferry-share-rules.json") }

// loadShareRules reads the rules for a collection and purpose from a JSON
// array of anon.Rules.
func loadShareRules(path, collection, purpose string) (anon.Rules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return anon.Rules{}, fmt.Errorf("share rules: %w", err)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return anon.Rules{}, inputf("share rules %s: want a JSON array of rules: %v", path, err)
	}
	for _, m := range raw {
		r, err := anon.ParseRules(m)
		if err != nil {
			return anon.Rules{}, inputf("share rules %s: %v", path, err)
		}
		if r.Collection == collection && r.Purpose == purpose {
			return r, nil
		}
	}
	return anon.Rules{}, inputf("share rules %s name no rules for %q and purpose %q", path, collection, purpose)
}

var shareCmd = &command{name: "share", args: "COLLECTION --to URL --purpose P [--rules FILE]",
	summary: "send an anonymized one-way copy of a collection to an outside endpoint (needs a grant)",
	example: `ferry consent grant usage --to http://127.0.0.1:8080/ --purpose improve-model-quality
ferry share usage --to http://127.0.0.1:8080/ --purpose improve-model-quality`,
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &shareCommand{env: e}
		fs.StringVar(&c.to, "to", "", "the endpoint URL (HTTP POST of a JSON batch)")
		fs.StringVar(&c.purpose, "purpose", consent.PurposeImprove, "the purpose of the share")
		fs.StringVar(&c.rules, "rules", "", "anonymization rules: a JSON array of rules (default: ferry-share-rules.json in the store directory)")
		fs.BoolVar(&c.json, "json", false, "print the result as JSON")
		return c
	}}

// shareCommand is `ferry share COLLECTION`: with no grant it asks on a
// terminal, and fails with replica.ErrNoConsent elsewhere.
type shareCommand struct {
	*env
	to      string // the endpoint URL
	purpose string
	rules   string // a rules file, or "" for the store's
	json    bool
}

func (c *shareCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	if err := needArgs(args, 1); err != nil {
		return err
	}
	to, purpose := c.to, c.purpose
	if to == "" {
		return usagef("--to is required")
	}
	rulesFile := c.rules
	if rulesFile == "" {
		rulesFile = shareRulesPath(e.dir)
	}
	// The name first: an invalid one is the error, not a rules
	// file without rules for it.
	if err := names.Check("collection", args[0]); err != nil {
		return fmt.Errorf("%w: %w", replica.ErrInvalid, err)
	}
	rules, err := loadShareRules(rulesFile, args[0], purpose)
	if err != nil {
		return err
	}
	return e.withReplica(ctx, func(r *replica.Replica) error {
		if _, ok := r.Consent().Allowed(to, args[0], purpose); !ok {
			if !e.interactive {
				return fmt.Errorf("%w: run 'ferry consent grant %s --to %s --purpose %s' first", replica.ErrNoConsent, args[0], to, purpose)
			}
			fields := make([]string, 0, len(rules.Fields))
			for f := range rules.Fields {
				fields = append(fields, f)
			}
			_, err := r.Consent().Ask(ctx, consent.Request{Collection: args[0], Fields: fields, Purpose: purpose, Destination: to},
				func(prompt string, _ consent.Request) (bool, error) {
					fmt.Fprintf(e.stderr, "%s [y/N] ", prompt)
					var ans string
					fmt.Fscanln(e.stdin, &ans)
					return strings.EqualFold(ans, "y") || strings.EqualFold(ans, "yes"), nil
				})
			if err != nil {
				return err
			}
		}
		res, err := r.Share(ctx, replica.ShareOptions{Rules: rules, DestinationID: to,
			Destination: &collector.HTTPDestination{URL: to, Format: collector.JSON}})
		if err != nil {
			return err
		}
		if c.json {
			return e.printJSON(res)
		}
		fmt.Fprintf(e.stdout, "shared %d anonymized records of %s with %s (%d withheld by k-anonymity, epsilon %.2g per record)\n",
			res.Records, args[0], to, res.Withheld, res.Epsilon)
		return nil
	})
}
