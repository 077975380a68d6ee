package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/replica"
)

var spaceCmd = &command{name: "space", args: "create RELAY-URL --collections A,B | code | invite SPACE-ID JOIN-CODE --out FILE | join FILE --collections A,B | list | status SPACE-ID | remove SPACE-ID FINGERPRINT | policy SPACE-ID --expire-after 30d|never|default",
	summary: "devices that are rarely online together share a space on a relay",
	example: `ferry space create http://127.0.0.1:7443 --collections notes     # first device
ferry space code                                                 # new device: prints its join code
ferry space invite SPACE-ID 'ferry-join1:...' --out invite.age     # first device
ferry space join invite.age --collections notes                  # new device
ferry sync http://127.0.0.1:7443                                 # any device, any time
ferry space status SPACE-ID                                      # members and their last acknowledgement
ferry space remove SPACE-ID FINGERPRINT                          # a lost device: the key rotates
ferry space policy SPACE-ID --expire-after 30d                   # drop members silent for 30 days`,
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &spaceCommand{env: e}
		c.collections.bind(fs, "the space syncs")
		fs.StringVar(&c.out, "out", "", "invite: write the sealed invitation here")
		fs.BoolVar(&c.json, "json", false, "list, status, remove: print JSON")
		fs.StringVar(&c.expire, "expire-after", "", "policy: drop members silent for longer than this (e.g. 30d, 720h), never, or default (90d)")
		return c
	}}

// spaceCommand is `ferry space create|code|invite|join|list|status|remove|policy`.
type spaceCommand struct {
	*env
	collections collectionFlags // create, join
	out         string          // invite: the invitation file
	json        bool            // list, status, remove
	expire      string          // policy
}

// spaceArg accepts a space id as `ferry space list` prints it, or as
// space:ID.
func spaceArg(s string) string { return strings.TrimPrefix(strings.TrimSpace(s), "space:") }

// parseExpiry reads --expire-after: a Go duration, a number of days
// ("30d"), "never" (negative) or "default" (0).
func parseExpiry(s string) (time.Duration, error) {
	switch s {
	case "never":
		return -1, nil
	case "default":
		return 0, nil
	case "":
		return 0, usagef("--expire-after is required (e.g. 30d, 720h, never, default)")
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 16)
		if err != nil || n == 0 {
			return 0, usagef("--expire-after %q: want a number of days (e.g. 30d)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, usagef("--expire-after %q: want a positive duration (e.g. 30d, 720h), never or default", s)
	}
	return d, nil
}

func (c *spaceCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("want create, code, invite, join, list, status, remove or policy")
	}
	return c.withReplica(ctx, func(r *replica.Replica) error {
		switch args[0] {
		case "create":
			if len(args) != 2 || !isRelayURL(args[1]) {
				return usagef("want create RELAY-URL (http:// or https://)")
			}
			sp, err := r.CreateSpace(ctx, args[1], c.collections.names())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "created space %s on %s\n", sp.ID, sp.RelayURL)
		case "code":
			code, err := r.JoinCode()
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, code)
		case "invite":
			if len(args) != 3 || c.out == "" {
				return usagef("want invite SPACE-ID JOIN-CODE --out FILE")
			}
			inv, err := r.Invite(ctx, args[1], args[2])
			if err != nil {
				return err
			}
			if err := os.WriteFile(c.out, inv, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "wrote the invitation to %s; only the invited device can open it\n", c.out)
		case "join":
			if len(args) != 2 {
				return usagef("want join FILE --collections A,B")
			}
			b, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			sp, err := r.JoinSpace(ctx, b, c.collections.names())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "joined space %s on %s\n", sp.ID, sp.RelayURL)
		case "list":
			ids, err := r.Spaces(ctx)
			if err != nil {
				return err
			}
			type row struct {
				ID    string `json:"id"`
				Relay string `json:"relay"`
			}
			rows := []row{}
			for _, id := range ids {
				sp, _, err := r.Space(ctx, id)
				if err != nil {
					return err
				}
				rows = append(rows, row{id, sp.RelayURL})
			}
			if c.json {
				return c.printJSON(rows)
			}
			for _, x := range rows {
				fmt.Fprintf(c.stdout, "%s %s\n", x.ID, x.Relay)
			}
		case "status":
			if len(args) != 2 {
				return usagef("want status SPACE-ID")
			}
			info, err := r.SpaceStatus(ctx, spaceArg(args[1]))
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(info)
			}
			c.printSpace(info)
		case "remove":
			if len(args) != 3 {
				return usagef("want remove SPACE-ID FINGERPRINT (the device's ferry id, as ferry space status lists it)")
			}
			ch, err := r.RemoveMember(ctx, spaceArg(args[1]), args[2])
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(ch)
			}
			fmt.Fprintf(c.stdout, "removed %s from space %s; the key rotated to epoch %d: the relay refuses that device and it cannot read anything written from now on\n",
				ch.Member, ch.Space, ch.Epoch)
		case "policy":
			if len(args) != 2 {
				return usagef("want policy SPACE-ID --expire-after 30d|never|default")
			}
			d, err := parseExpiry(c.expire)
			if err != nil {
				return err
			}
			if err := r.SetSpaceExpiry(ctx, spaceArg(args[1]), d); err != nil {
				return err
			}
			switch {
			case d < 0:
				fmt.Fprintln(c.stdout, "members are never dropped for silence; a device that never comes back holds the relay's compaction: remove it with ferry space remove")
			case d == 0:
				fmt.Fprintf(c.stdout, "members silent for longer than %s (the default) are dropped at this device's next sync\n", days(replica.DefaultSpaceExpiry))
			default:
				fmt.Fprintf(c.stdout, "members silent for longer than %s are dropped at this device's next sync (the key rotates)\n", days(d))
			}
		default:
			return usagef("unknown space subcommand %q", args[0])
		}
		return nil
	})
}

// days prints a duration in days when it is a whole number of them.
func days(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func (c *spaceCommand) printSpace(info replica.SpaceInfo) {
	fmt.Fprintf(c.stdout, "space %s on %s, key epoch %d\n", info.ID, info.Relay, info.Epoch)
	if info.Removed != "" {
		fmt.Fprintf(c.stdout, "  this device was removed: %s\n", info.Removed)
	}
	policy := "never"
	if info.ExpireAfter > 0 {
		policy = days(info.ExpireAfter)
	}
	fmt.Fprintf(c.stdout, "  collections granted: %s\n", strings.Join(info.Collections, ", "))
	fmt.Fprintf(c.stdout, "  members silent for longer than %s are dropped\n", policy)
	if info.Removed == "" {
		fmt.Fprintf(c.stdout, "  the relay holds %d bundles (%d bytes), sequence %d..%d\n", info.Bundles, info.Bytes, info.Low, info.Head)
	}
	for _, m := range info.Members {
		line := fmt.Sprintf("  member %s: last acknowledged %s (up to %d)", m.Fingerprint, m.LastAck.Format(time.RFC3339), m.Cursor)
		if m.Self {
			line += ", this device"
		}
		if !m.DropAt.IsZero() {
			line += ", dropped after " + m.DropAt.Format(time.RFC3339) + " if silent"
		}
		fmt.Fprintln(c.stdout, line)
	}
	for _, ch := range info.Changes {
		line := fmt.Sprintf("  %s %s (key epoch %d)", ch.Change, ch.Member, ch.Epoch)
		if ch.Reason != "" {
			line += ": " + ch.Reason
		}
		fmt.Fprintln(c.stdout, line)
	}
}
