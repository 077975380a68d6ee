package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ferrysync/ferry/replica"
)

// The record commands: put, get, del, list, doc.

var putCmd = &command{name: "put", args: "COLLECTION ID JSON", summary: "merge a JSON object's fields into a record",
	example: `ferry put notes groceries '{"title":"Groceries","items":["milk"]}'`,
	new:     func(e *env, _ *flag.FlagSet) runner { return &putCommand{e} }}

// putCommand is `ferry put COLLECTION ID JSON`.
type putCommand struct{ *env }

func (c *putCommand) Run(ctx context.Context, args []string) error {
	if err := needArgs(args, 3); err != nil {
		return err
	}
	fields, err := parseJSONObject(args[2])
	if err != nil {
		return err
	}
	return c.withReplica(ctx, func(r *replica.Replica) error { return r.Put(ctx, args[0], args[1], fields) })
}

var getCmd = &command{name: "get", args: "COLLECTION ID", summary: "print a record as JSON",
	example: "ferry get notes groceries",
	new:     func(e *env, _ *flag.FlagSet) runner { return &getCommand{e} }}

// getCommand is `ferry get COLLECTION ID`.
type getCommand struct{ *env }

func (c *getCommand) Run(ctx context.Context, args []string) error {
	return c.withReplicaArgs(ctx, args, 2, func(r *replica.Replica) error {
		m, err := r.Get(ctx, args[0], args[1])
		if err != nil {
			return err
		}
		return c.printValue(m)
	})
}

var delCmd = &command{name: "del", args: "COLLECTION ID", summary: "delete a record (the deletion syncs)",
	example: "ferry del notes groceries",
	new:     func(e *env, _ *flag.FlagSet) runner { return &delCommand{e} }}

// delCommand is `ferry del COLLECTION ID`.
type delCommand struct{ *env }

func (c *delCommand) Run(ctx context.Context, args []string) error {
	return c.withReplicaArgs(ctx, args, 2, func(r *replica.Replica) error { return r.Delete(ctx, args[0], args[1]) })
}

var listCmd = &command{name: "list", args: "COLLECTION [--json] [--order id|updated] [--limit N]",
	summary: "list a collection's records (id and last update)",
	example: "ferry list notes --order updated --limit 10",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &listCommand{env: e}
		fs.BoolVar(&c.json, "json", false, "print JSON: {\"items\":[{\"id\",\"created\",\"updated\"}],\"next\"}")
		fs.StringVar(&c.order, "order", "id", "sort by id or updated (newest first)")
		fs.IntVar(&c.limit, "limit", 0, "at most N records")
		fs.StringVar(&c.after, "after", "", "continue after this cursor (the 'next' of a previous --json page)")
		return c
	}}

// listCommand is `ferry list COLLECTION`.
type listCommand struct {
	*env
	json  bool
	order string // id or updated
	limit int
	after string // a cursor from a previous page
}

func (c *listCommand) Run(ctx context.Context, args []string) error {
	if err := needArgs(args, 1); err != nil {
		return err
	}
	opts := replica.ListOptions{After: c.after, Limit: c.limit}
	switch c.order {
	case "id":
	case "updated":
		opts.Order = replica.ByUpdated
	default:
		return usagef("--order is id or updated")
	}
	return c.withReplica(ctx, func(r *replica.Replica) error {
		page, err := r.List(ctx, args[0], opts)
		if err != nil {
			return err
		}
		if c.json {
			if page.Items == nil {
				page.Items = []replica.RecordInfo{}
			}
			return c.printJSON(page)
		}
		for _, it := range page.Items {
			fmt.Fprintf(c.stdout, "%s\t%s\n", it.ID, it.Updated.UTC().Format(time.RFC3339))
		}
		return nil
	})
}

var docCmd = &command{name: "doc", args: "export COLLECTION ID FILE | import COLLECTION ID FILE",
	summary: "write a record as a standard .automerge file, or merge one in",
	example: "ferry doc export notes groceries groceries.automerge",
	new:     func(e *env, _ *flag.FlagSet) runner { return &docCommand{e} }}

// docCommand is `ferry doc export|import COLLECTION ID FILE`.
type docCommand struct{ *env }

func (c *docCommand) Run(ctx context.Context, args []string) error {
	if len(args) != 4 || (args[0] != "export" && args[0] != "import") {
		return usagef("want export|import COLLECTION ID FILE")
	}
	return c.withReplica(ctx, func(r *replica.Replica) error {
		if args[0] == "export" {
			b, err := r.ExportDoc(ctx, args[1], args[2])
			if err != nil {
				return err
			}
			return os.WriteFile(args[3], b, 0o600)
		}
		b, err := os.ReadFile(args[3])
		if err != nil {
			return err
		}
		n, err := r.ImportDoc(ctx, args[1], args[2], b)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "merged %s into %s/%s (%d conflicts)\n", args[3], args[1], args[2], n)
		return nil
	})
}
