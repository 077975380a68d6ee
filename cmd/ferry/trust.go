package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/replica"
)

// Pairing: trust and untrust.

var trustCmd = &command{name: "trust", args: "FINGERPRINT --collections A,B [--expires DURATION]",
	summary: "pair a peer: grant it device-sync of the named collections",
	example: "ferry trust $(FERRY_DIR=../phone ferry id) --collections notes,todo",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &trustCommand{env: e}
		c.collections.bind(fs, "the peer may sync")
		fs.StringVar(&c.purpose, "purpose", consent.PurposeDeviceSync, "the purpose (only device-sync pairs a peer)")
		fs.DurationVar(&c.expires, "expires", 0, "the grant lapses after this long (default: until revoked)")
		return c
	}}

// trustCommand is `ferry trust FINGERPRINT`.
type trustCommand struct {
	*env
	collections collectionFlags
	purpose     string
	expires     time.Duration // 0: until revoked
}

func (c *trustCommand) Run(ctx context.Context, args []string) error {
	if err := needArgs(args, 1); err != nil {
		return err
	}
	colls := c.collections.names()
	if len(colls) == 0 {
		return usagef("--collections (or --collection) is required")
	}
	if c.purpose != consent.PurposeDeviceSync {
		return usagef("trust pairs for device-sync; use 'ferry consent grant' for purpose %q", c.purpose)
	}
	return c.withReplica(ctx, func(r *replica.Replica) error {
		gs, err := r.Pair(ctx, args[0], colls, c.expires)
		if err != nil {
			return err
		}
		for _, g := range gs {
			fmt.Fprintf(c.stdout, "granted %s: %s to %s for %s\n", g.ID, g.Collection, g.Destination, g.Purpose)
		}
		return nil
	})
}

var untrustCmd = &command{name: "untrust", args: "FINGERPRINT | space:ID", summary: "revoke every grant a peer or a relay space holds",
	example: "ferry untrust 5ul3naxq...\nferry untrust space:ay5hteamc65zjc3igz3wlhqadw",
	new:     func(e *env, _ *flag.FlagSet) runner { return &untrustCommand{e} }}

// untrustCommand is `ferry untrust FINGERPRINT|space:ID`.
type untrustCommand struct{ *env }

func (c *untrustCommand) Run(ctx context.Context, args []string) error {
	return c.withReplicaArgs(ctx, args, 1, func(r *replica.Replica) error {
		n, err := r.Unpair(ctx, args[0])
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s holds no grant: %w", args[0], consent.ErrNoGrant)
		}
		fmt.Fprintf(c.stdout, "revoked %d grant(s)\n", n)
		return nil
	})
}
