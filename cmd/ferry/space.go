package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/ferrysync/ferry/replica"
)

var spaceCmd = &command{name: "space", args: "create RELAY-URL --collections A,B | code | invite SPACE-ID JOIN-CODE --out FILE | join FILE --collections A,B | list",
	summary: "devices that are rarely online together share a space on a relay",
	example: `ferry space create http://127.0.0.1:7443 --collections notes     # first device
ferry space code                                                 # new device: prints its join code
ferry space invite SPACE-ID 'ferry-join1:...' --out invite.age     # first device
ferry space join invite.age --collections notes                  # new device
ferry sync http://127.0.0.1:7443                                 # any device, any time`,
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &spaceCommand{env: e}
		c.collections.bind(fs, "the space syncs")
		fs.StringVar(&c.out, "out", "", "invite: write the sealed invitation here")
		fs.BoolVar(&c.json, "json", false, "list: print JSON")
		return c
	}}

// spaceCommand is `ferry space create|code|invite|join|list`.
type spaceCommand struct {
	*env
	collections collectionFlags // create, join
	out         string          // invite: the invitation file
	json        bool            // list
}

func (c *spaceCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("want create, code, invite, join or list")
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
		default:
			return usagef("unknown space subcommand %q", args[0])
		}
		return nil
	})
}
