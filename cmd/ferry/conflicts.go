package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/policy"
	"github.com/ferrysync/ferry/replica"
)

// Conflicts waiting for the user: conflicts and resolve.

var conflictsCmd = &command{name: "conflicts", args: "[--json]", summary: "list conflicts waiting for you, with their candidates",
	example: "ferry conflicts",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &conflictsCommand{env: e}
		fs.BoolVar(&c.json, "json", false, "print JSON (an array of queued conflicts)")
		return c
	}}

// conflictsCommand is `ferry conflicts`.
type conflictsCommand struct {
	*env
	json bool
}

func (c *conflictsCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	return e.withReplicaArgs(ctx, args, 0, func(r *replica.Replica) error {
		list, err := r.Conflicts(ctx)
		if err != nil {
			return err
		}
		if c.json {
			out := make([]conflictJSON, 0, len(list))
			for _, en := range list {
				out = append(out, toConflictJSON(en))
			}
			return e.printJSON(out)
		}
		for _, en := range list {
			c := toConflictJSON(en)
			showing := fmt.Sprintf("showing candidate %d", c.Provisional)
			if c.Provisional < 0 {
				showing = "showing none of the candidates"
			}
			fmt.Fprintf(e.stdout, "%s  %s/%s %s (decide by %s; %s)\n", c.ID, c.Collection, c.Record, c.Path,
				c.Deadline.UTC().Format(time.RFC3339), showing)
			for _, cand := range c.Candidates {
				v := []byte(cand.Value)
				if cand.Deleted {
					v = []byte("(deleted)")
				}
				fmt.Fprintf(e.stdout, "    [%d] %s  by %s at %s\n", cand.Index, v, short(cand.Replica), cand.At.UTC().Format(time.RFC3339))
			}
		}
		return nil
	})
}

var resolveCmd = &command{name: "resolve", args: "CONFLICT-ID (--pick N | --value JSON)", summary: "decide a conflict: pick a candidate or give a value",
	example: "ferry resolve 29de7131 --pick 1",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &resolveCommand{env: e}
		fs.IntVar(&c.pick, "pick", -1, "the candidate's index, as 'ferry conflicts' lists it")
		fs.StringVar(&c.value, "value", "", "a JSON value to write instead")
		return c
	}}

// resolveCommand is `ferry resolve CONFLICT-ID`: exactly one of pick and
// value is set.
type resolveCommand struct {
	*env
	pick  int    // a candidate's index, or -1
	value string // a JSON value, or ""
}

func (c *resolveCommand) Run(ctx context.Context, args []string) error {
	if err := needArgs(args, 1); err != nil {
		return err
	}
	if (c.pick >= 0) == (c.value != "") {
		return usagef("give exactly one of --pick and --value")
	}
	var v any
	if c.value != "" {
		var err error
		if v, err = parseJSONValue(c.value); err != nil {
			return err
		}
	}
	return c.withReplica(ctx, func(r *replica.Replica) error {
		id, err := expandConflictID(ctx, r, args[0])
		if err != nil {
			return err
		}
		if c.value != "" {
			err = r.ResolveValue(ctx, id, v)
		} else {
			err = r.ResolvePick(ctx, id, c.pick)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "resolved %s\n", id)
		return nil
	})
}

// conflictJSON is the stable JSON form of a queued conflict.
type conflictJSON struct {
	ID          string          `json:"id"`
	Collection  string          `json:"collection"`
	Record      string          `json:"record"`
	Path        string          `json:"path"`
	Kind        string          `json:"kind"`
	Provisional int             `json:"provisional"`
	Deadline    jsonTime        `json:"deadline"`
	Fallback    string          `json:"fallback"`
	Candidates  []candidateJSON `json:"candidates"`
}

type candidateJSON struct {
	Index int `json:"index"`
	// Value is in ferry's JSON value form (crdt.EncodeJSON), as 'ferry get'
	// prints it.
	Value   json.RawMessage `json:"value"`
	Deleted bool            `json:"deleted,omitempty"`
	Replica string          `json:"replica"`
	At      jsonTime        `json:"at"`
}

// jsonTime is a time in a conflict listing (a candidate's write time, the
// deadline derived from it). A foreign client can stamp a change with any
// time, including one encoding/json cannot print (years outside
// 0000-9999); such a time is printed as milliseconds since 1970
// ({"$date_ms": n}, as in the value form) instead of failing the listing.
type jsonTime struct{ time.Time }

func (c jsonTime) MarshalJSON() ([]byte, error) {
	if y := c.UTC().Year(); y >= 0 && y <= 9999 {
		return c.Time.MarshalJSON()
	}
	return crdt.EncodeJSON(c.Time)
}

func (c *jsonTime) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return c.Time.UnmarshalJSON(b)
	}
	v, err := crdt.DecodeJSON(b)
	if err != nil {
		return err
	}
	t, ok := v.(time.Time)
	if !ok {
		return fmt.Errorf("want a date, got %s", b)
	}
	c.Time = t
	return nil
}

func toConflictJSON(en policy.Entry) conflictJSON {
	c := conflictJSON{ID: en.ID(), Collection: en.Collection, Record: en.RecordID, Path: en.Conflict.Path,
		Kind: en.Conflict.Kind.String(), Provisional: en.Provisional, Deadline: jsonTime{en.Deadline}, Fallback: string(en.Fallback)}
	for i, cand := range en.Conflict.Candidates {
		v, err := crdt.EncodeJSON(cand.Value)
		if err != nil { // not a value a record holds; show why instead
			v, _ = json.Marshal(fmt.Sprintf("(unprintable: %v)", err))
		}
		c.Candidates = append(c.Candidates, candidateJSON{Index: i, Value: v, Deleted: cand.Deleted,
			Replica: cand.ReplicaID, At: jsonTime{cand.HLC.Time()}})
	}
	return c
}

// expandConflictID accepts a unique prefix of a conflict id.
func expandConflictID(ctx context.Context, r *replica.Replica, prefix string) (string, error) {
	list, err := r.Conflicts(ctx)
	if err != nil {
		return "", err
	}
	var match []string
	for _, en := range list {
		if strings.HasPrefix(en.ID(), prefix) {
			match = append(match, en.ID())
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		// Not open: the replica says whether it was decided, superseded
		// by a newer write (replica.ErrConflictStale) or never existed.
		return prefix, nil
	}
	return "", usagef("%q matches %d conflicts; give more of the id", prefix, len(match))
}
