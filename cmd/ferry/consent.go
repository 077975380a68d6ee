package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/replica"
)

var consentCmd = &command{name: "consent", args: "list [--json] | log [--json] | revoke GRANT-ID|FINGERPRINT|space:ID | grant COLLECTION --to DEST --purpose P [--fields A,B] [--expires D]",
	summary: "list, grant and revoke permissions to share, and show the ledger of every share",
	example: "ferry consent grant usage --to http://127.0.0.1:8080/collect --purpose improve-model-quality --fields minutes,model --expires 720h",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &consentCommand{env: e}
		fs.BoolVar(&c.json, "json", false, "print JSON (list: an array of grants; log: an array of ledger entries)")
		fs.StringVar(&c.to, "to", "", "grant: the destination (peer fingerprint, space:ID, or URL)")
		fs.StringVar(&c.purpose, "purpose", "", "grant: the purpose ("+strings.Join([]string{consent.PurposeDeviceSync, consent.PurposeBackup, consent.PurposeImprove}, ", ")+")")
		fs.StringVar(&c.fields, "fields", "", "grant: only these fields (anonymized shares)")
		fs.DurationVar(&c.expires, "expires", 0, "grant: lapses after this long (default: until revoked)")
		return c
	}}

// consentCommand is `ferry consent list|log|revoke|grant`.
type consentCommand struct {
	*env
	json    bool
	to      string        // grant: the destination
	purpose string        // grant
	fields  string        // grant: comma-separated, empty for all
	expires time.Duration // grant: 0 for until revoked
}

func (c *consentCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("want list, log, revoke or grant")
	}
	return c.withReplica(ctx, func(r *replica.Replica) error {
		l := r.Consent()
		switch args[0] {
		case "list":
			live := l.Live()
			if c.json {
				if live == nil {
					live = []consent.Grant{}
				}
				return c.printJSON(live)
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
				fmt.Fprintf(c.stdout, "%s  %s (%s) -> %s for %s, %s\n", g.ID, g.Collection, fields, g.Destination, g.Purpose, exp)
			}
			return nil
		case "log":
			es, err := l.Entries(ctx)
			if err != nil {
				return err
			}
			if c.json {
				if es == nil {
					es = []consent.Entry{}
				}
				return c.printJSON(es)
			}
			for _, en := range es {
				fmt.Fprintf(c.stdout, "%d %s %s %s\n", en.Seq, en.At.UTC().Format(time.RFC3339), en.Kind, describeEntry(en))
			}
			return nil
		case "revoke":
			if len(args) != 2 {
				return usagef("want revoke GRANT-ID, or a destination (FINGERPRINT or space:ID) to revoke all its grants")
			}
			// A destination revokes every grant it holds, as ferry
			// untrust does, for a peer and a space alike.
			if dest, err := replica.ParseDestination(args[1]); err == nil {
				n, err := l.RevokeDestination(ctx, dest, "revoked by the user")
				if err != nil {
					return err
				}
				if n == 0 {
					return fmt.Errorf("%s holds no grant: %w", args[1], consent.ErrNoGrant)
				}
				fmt.Fprintf(c.stdout, "revoked %d grant(s) of %s\n", n, dest)
				return nil
			}
			if err := l.Revoke(ctx, args[1], "revoked by the user"); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked %s\n", args[1])
			return nil
		case "grant":
			if len(args) != 2 || c.to == "" || c.purpose == "" {
				return usagef("want grant COLLECTION --to DEST --purpose P")
			}
			g := consent.Grant{Collection: args[1], Destination: c.to, Purpose: c.purpose, Fields: splitList(c.fields)}
			if c.expires > 0 {
				g.Expires = time.Now().Add(c.expires)
			} else if c.expires < 0 {
				return usagef("--expires %v is negative: give how long the grant lasts (e.g. 720h)", c.expires)
			}
			g, err := l.Grant(ctx, g)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "granted %s\n", g.ID)
			return nil
		}
		return usagef("unknown consent subcommand %q", args[0])
	})
}

func describeEntry(en consent.Entry) string {
	switch {
	case en.Grant != nil:
		return fmt.Sprintf("%s: %s -> %s for %s", en.Grant.ID, en.Grant.Collection, en.Grant.Destination, en.Grant.Purpose)
	case en.Revoke != nil:
		return fmt.Sprintf("%s (%s)", en.Revoke.GrantID, en.Revoke.Reason)
	case en.Share != nil:
		return fmt.Sprintf("%d records, %d bytes of %s -> %s under %s", en.Share.Records, en.Share.Bytes, en.Share.Collection, en.Share.Destination, en.Share.GrantID)
	case en.Member != nil:
		m := en.Member
		s := fmt.Sprintf("%s %s %s (key epoch %d)", m.Space, m.Change, m.Member, m.Epoch)
		if m.Reason != "" {
			s += ": " + m.Reason
		}
		return s
	case en.Answer != nil:
		return fmt.Sprintf("%s to %s for %s: granted=%v", en.Answer.Request.Collection, en.Answer.Request.Destination, en.Answer.Request.Purpose, en.Answer.Granted)
	}
	return ""
}
