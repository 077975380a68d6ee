package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
)

// The store's own commands: init, id, passwd, rotate-key.

var initCmd = &command{name: "init", args: "[--name NAME] [--priority N] [--policy FILE]",
	summary: "create an encrypted store (asks for the passphrase twice on a terminal)",
	example: "FERRY_DIR=~/notes-a ferry init --name laptop",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &initCommand{env: e}
		fs.StringVar(&c.name, "name", "", "a human-readable name for this replica")
		fs.IntVar(&c.priority, "priority", 0, "this replica's priority for the priority conflict policy (higher wins)")
		fs.StringVar(&c.policy, "policy", "", "copy this conflict policy file into the store (see 'ferry policy --help')")
		return c
	}}

// initCommand is `ferry init`: it creates the store, its config and
// optionally its policy file.
type initCommand struct {
	*env
	name     string
	priority int
	policy   string // a policy file to copy into the store
}

func (c *initCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	if err := needArgs(args, 0); err != nil {
		return err
	}
	var policyBytes []byte
	if c.policy != "" {
		b, err := os.ReadFile(c.policy)
		if err != nil {
			return err
		}
		if _, err := parsePolicy(b); err != nil {
			return err
		}
		policyBytes = b
	}
	pass, err := e.passphrase(true)
	if err != nil {
		return err
	}
	cfg := replicaConfig{Name: c.name, Priority: c.priority}
	opts := replica.Options{Passphrase: pass, Name: cfg.Name, Priority: cfg.Priority}
	if e.fastKDF() {
		opts.KDF = storage.TestKDF()
	}
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return err
	}
	r, err := replica.Create(ctx, e.dir, opts)
	if err != nil {
		return err
	}
	cb, _ := json.Marshal(cfg)
	if err := os.WriteFile(configPath(e.dir), cb, 0o600); err != nil {
		r.Close()
		return err
	}
	if policyBytes != nil {
		if err := os.WriteFile(policyPath(e.dir), policyBytes, 0o600); err != nil {
			r.Close()
			return err
		}
	}
	fmt.Fprintf(e.stdout, "created %s\nreplica id %s\n", e.dir, r.ID())
	return r.Close()
}

var idCmd = &command{name: "id", args: "", summary: "print this replica's identity fingerprint",
	example: "ferry id",
	new:     func(e *env, _ *flag.FlagSet) runner { return &idCommand{e} }}

// idCommand is `ferry id`.
type idCommand struct{ *env }

func (c *idCommand) Run(ctx context.Context, args []string) error {
	return c.withReplicaArgs(ctx, args, 0, func(r *replica.Replica) error {
		fmt.Fprintln(c.stdout, r.ID())
		return nil
	})
}

var passwdCmd = &command{name: "passwd", args: "", summary: "change the passphrase (atomic: the old or the new one always works)",
	example: "FERRY_NEW_PASSPHRASE=... ferry passwd",
	new:     func(e *env, _ *flag.FlagSet) runner { return &passwdCommand{e} }}

// passwdCommand is `ferry passwd`: the new passphrase comes from
// $FERRY_NEW_PASSPHRASE or a prompt.
type passwdCommand struct{ *env }

func (c *passwdCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	return e.withReplicaArgs(ctx, args, 0, func(r *replica.Replica) error {
		var next []byte
		if p := e.getenv("FERRY_NEW_PASSPHRASE"); p != "" {
			next = []byte(p)
		} else {
			var err error
			if next, err = e.prompt("new passphrase", true); err != nil {
				return err
			}
		}
		secret := replica.Secret{Passphrase: next}
		if e.fastKDF() {
			secret.KDF = storage.TestKDF()
		}
		if err := r.ChangePassphrase(ctx, secret); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "passphrase changed")
		return nil
	})
}

var rotateKeyCmd = &command{name: "rotate-key", args: "", summary: "re-encrypt every value under a new master key (resumes if interrupted)",
	example: "ferry rotate-key",
	new:     func(e *env, _ *flag.FlagSet) runner { return &rotateKeyCommand{e} }}

// rotateKeyCommand is `ferry rotate-key`.
type rotateKeyCommand struct{ *env }

func (c *rotateKeyCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	return e.withReplicaArgs(ctx, args, 0, func(r *replica.Replica) error {
		if err := r.RotateKey(ctx, e.progressPrinter("re-encrypted")); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "master key rotated")
		return nil
	})
}
