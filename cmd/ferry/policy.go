package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferrysync/ferry/policy"
)

var policyCmd = &command{name: "policy", args: "[--json]", summary: "show the conflict policy set (ferry-policy.json in the store directory) and its fingerprint",
	example: `cat > $FERRY_DIR/ferry-policy.json <<'EOF'
{"version":1,"default":{"policy":"timestamp"},
 "collections":{"notes":{"policy":"user","deadline":"24h","fields":{"/tags":{"policy":"merge"}}}}}
EOF
ferry policy`,
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &policyCommand{env: e}
		fs.BoolVar(&c.json, "json", false, "print {\"fingerprint\",\"set\"}")
		return c
	}}

// policyCommand is `ferry policy`: it shows the store's policy set.
type policyCommand struct {
	*env
	json bool
}

func (c *policyCommand) Run(ctx context.Context, args []string) error {
	if err := needArgs(args, 0); err != nil {
		return err
	}
	set, err := policySet(c.dir)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(map[string]any{"fingerprint": set.Fingerprint(), "set": set})
	}
	b, _ := json.MarshalIndent(set, "", "  ")
	fmt.Fprintf(c.stdout, "%s\nfingerprint %s\n", b, set.Fingerprint())
	return nil
}

func policyPath(dir string) string { return filepath.Join(dir, "ferry-policy.json") }

// policySet reads the store's policy file, or the default set.
func policySet(dir string) (*policy.Set, error) {
	set, err := policy.LoadFile(policyPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return policy.NewSet(policy.Rule{Policy: policy.Timestamp}), nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", policyPath(dir), err)
	}
	return set, nil
}

// parsePolicy validates a policy file's bytes.
func parsePolicy(b []byte) (*policy.Set, error) {
	set, err := policy.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	return set, nil
}
