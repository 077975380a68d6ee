package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/transport"
)

// Syncing: serve, sync and status.

var serveCmd = &command{name: "serve", args: "--listen ADDR | --relay RELAY-URL [--interval D]", summary: "accept sync sessions from trusted peers over TLS, or keep syncing through a relay (until interrupted)",
	example: "ferry serve --listen 127.0.0.1:7420\nferry serve --relay http://127.0.0.1:7443 --interval 30s",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &serveCommand{env: e}
		fs.StringVar(&c.listen, "listen", "127.0.0.1:7420", "the TCP address to listen on")
		fs.StringVar(&c.relay, "relay", "", "sync through this relay instead, every --interval")
		fs.DurationVar(&c.interval, "interval", 30*time.Second, "with --relay: time between syncs")
		fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics on http://ADDR/metrics (default off)")
		fs.StringVar(&c.logLevel, "log-level", "warn", "structured log level on stderr: debug, info (a line per session), warn or error")
		return c
	}}

// serveCommand is `ferry serve`: a TLS listener for peers, or with
// --relay a loop syncing through the relay, until ctx ends.
type serveCommand struct {
	*env
	listen   string // host:port
	relay    string // a relay URL, or "" to listen
	interval time.Duration
	metrics  string // --metrics ADDR, or "" for none
	logLevel string
}

func (c *serveCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	if err := needArgs(args, 0); err != nil {
		return err
	}
	every := c.interval
	if every <= 0 {
		return usagef("--interval %v: want a positive duration (e.g. 30s)", every)
	}
	level, err := parseLevel(c.logLevel)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	reg := newRegistry()
	met := newSyncMetrics(reg)
	if c.metrics != "" {
		url, stop, err := serveMetrics(ctx, c.metrics, reg, log)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(e.stderr, "metrics on %s\n", url)
	}
	return e.withReplica(ctx, func(r *replica.Replica) error {
		if url := c.relay; url != "" {
			fmt.Fprintf(e.stdout, "syncing %s through %s every %s\n", e.dir, url, every)
			for {
				err := syncRelayOnce(ctx, e, r, url, false, met)
				log.Debug("relay sync", "relay", url, "ok", err == nil)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					fmt.Fprintf(e.stderr, "ferry serve: %s\n", oneLine(err))
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(every):
				}
			}
		}
		pins := watchPins(r, func(fp string) { fmt.Fprintf(e.stderr, "ferry serve: %s\n", refusedLine(ctx, r, fp)) })
		l, err := transport.ListenTLS(ctx, c.listen, r.Identity(), pins, transport.TLSOptions{})
		if err != nil {
			return err
		}
		defer l.Close()
		fmt.Fprintf(e.stdout, "serving %s on %s (replica %s)\n", e.dir, l.Addr(), r.ID())
		// The watch outlives Serve, which returns only once every
		// session has ended and published its status, so each
		// session's line is printed before serve exits.
		watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
		metDone := make(chan struct{})
		go func() {
			defer close(metDone)
			met.watch(watchCtx, r, log)
		}()
		defer func() { <-metDone }()
		events := r.Watch(watchCtx)
		printed := make(chan struct{})
		go func() {
			defer close(printed)
			for ev := range events {
				if ev.Kind == replica.EventStatus && ev.Status.State != replica.Syncing {
					s := ev.Status
					fmt.Fprintf(e.stdout, "session with %s: %s (sent %d, received %d records)\n",
						short(s.Peer), s.State, s.Progress.RecordsSent, s.Progress.RecordsReceived)
				}
			}
		}()
		err = r.Serve(ctx, l)
		stopWatch()
		<-printed
		return err
	})
}

var syncCmd = &command{name: "sync", args: "ADDR|RELAY-URL [--json]", summary: "run one sync session with a trusted peer (or through a relay) and print what moved",
	example: "ferry sync 127.0.0.1:7420\nferry sync http://127.0.0.1:7443   # through a relay: see 'ferry space --help'",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &syncCommand{env: e}
		fs.BoolVar(&c.json, "json", false, "print the summary as JSON (the SyncStats fields)")
		fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "give up after this long")
		return c
	}}

// syncCommand is `ferry sync ADDR|RELAY-URL`: one session.
type syncCommand struct {
	*env
	json    bool
	timeout time.Duration
}

func (c *syncCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	if err := needArgs(args, 1); err != nil {
		return err
	}
	if c.timeout <= 0 {
		return usagef("--timeout %v: want a positive duration (e.g. 2m)", c.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return e.withReplica(ctx, func(r *replica.Replica) error {
		if isRelayURL(args[0]) {
			return syncRelayOnce(ctx, e, r, args[0], c.json, nil)
		}
		pins := watchPins(r, nil)
		conn, err := transport.DialTLS(ctx, args[0], r.Identity(), pins, transport.TLSOptions{})
		if err != nil {
			return pins.explainDial(ctx, args[0], err)
		}
		defer conn.Close()
		show := e.progressPrinter("records received")
		st, err := r.SyncWith(ctx, conn, replica.SyncOptions{Progress: func(s replica.SyncStats) { show(s.RecordsReceived, 0) }})
		if e.progress {
			fmt.Fprintln(e.stderr)
		}
		if err != nil {
			return err
		}
		if c.json {
			return e.printJSON(st)
		}
		fmt.Fprintf(e.stdout, "synced with %s: sent %d records (%d bytes), received %d records (%d bytes), %d conflicts, %d frames\n",
			short(st.Peer), st.RecordsSent, st.BytesSent, st.RecordsReceived, st.BytesReceived, st.Conflicts, st.FramesSent+st.FramesReceived)
		return nil
	})
}

func isRelayURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// spaceFor finds the space this replica holds on the relay at url.
func spaceFor(ctx context.Context, r *replica.Replica, url string) (string, error) {
	ids, err := r.Spaces(ctx)
	if err != nil {
		return "", err
	}
	for _, id := range ids {
		sp, _, err := r.Space(ctx, id)
		if err != nil {
			return "", err
		}
		if strings.TrimSuffix(sp.RelayURL, "/") == strings.TrimSuffix(url, "/") {
			return id, nil
		}
	}
	return "", fmt.Errorf("%w on %s: create one with 'ferry space create %s --collections ...' or join one with 'ferry space join FILE'", replica.ErrUnknownSpace, url, url)
}

func syncRelayOnce(ctx context.Context, e *env, r *replica.Replica, url string, asJSON bool, met *syncMetrics) error {
	id, err := spaceFor(ctx, r, url)
	if err != nil {
		return err
	}
	st, err := r.SyncRelay(ctx, id)
	if met != nil {
		met.relaySync(st, err)
	}
	if err != nil {
		return err
	}
	if asJSON {
		return e.printJSON(st)
	}
	fmt.Fprintf(e.stdout, "synced through %s: pushed %d records in %d bundles, applied %d records from %d bundles, %d conflicts\n",
		url, st.RecordsPushed, st.BundlesPushed, st.RecordsApplied, st.BundlesPulled, st.Conflicts)
	if st.Healed {
		fmt.Fprintln(e.stdout, "this store went back to an older copy: asked the space's members to send everything again")
	}
	for _, fp := range st.Dropped {
		fmt.Fprintf(e.stdout, "dropped member %s: silent for longer than the space's policy (key rotated; the relay compacts again)\n", short(fp))
	}
	if st.Refused > 0 {
		fmt.Fprintf(e.stdout, "refused %d bundles sealed by removed members after their removal\n", st.Refused)
	}
	return nil
}

var statusCmd = &command{name: "status", args: "[--json]", summary: "the sync state per peer, open conflicts and counts",
	example: "ferry status --json",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &statusCommand{env: e}
		fs.BoolVar(&c.json, "json", false, "print {\"overall\":Status,\"peers\":[Status],\"records\":{collection:count}}")
		return c
	}}

// statusCommand is `ferry status`.
type statusCommand struct {
	*env
	json bool
}

func (c *statusCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	return e.withReplicaArgs(ctx, args, 0, func(r *replica.Replica) error {
		all, peers := r.Status(ctx)
		counts := map[string]int{}
		colls, err := r.Collections(ctx)
		if err != nil {
			return err
		}
		for _, coll := range colls {
			p, err := r.List(ctx, coll, replica.ListOptions{})
			if err != nil {
				return err
			}
			counts[coll] = len(p.Items)
		}
		spaces, err := localSpaces(ctx, r, peers)
		if err != nil {
			return err
		}
		if c.json {
			if peers == nil {
				peers = []replica.Status{}
			}
			return e.printJSON(map[string]any{"replica": r.ID(), "overall": all, "peers": peers, "spaces": spaces, "records": counts})
		}
		fmt.Fprintf(e.stdout, "replica %s: %s, %d open conflicts\n", r.ID(), all.State, all.OpenConflicts)
		isPeer := map[string]bool{}
		for _, sp := range spaces {
			if !sp.Synced {
				fmt.Fprintf(e.stdout, "  space %s on %s: never synced, key epoch %d%s\n", sp.ID, sp.Relay, sp.Epoch, sp.removedText())
			}
		}
		for _, p := range peers {
			isPeer[p.Peer] = true
			line := fmt.Sprintf("  peer %s: %s", short(p.Peer), p.State)
			if id, ok := strings.CutPrefix(p.Peer, "space:"); ok {
				line = fmt.Sprintf("  space %s: %s", id, p.State)
				for _, sp := range spaces {
					if sp.ID == id {
						line = fmt.Sprintf("  space %s on %s: %s, key epoch %d%s", id, sp.Relay, p.State, sp.Epoch, sp.removedText())
					}
				}
			}
			if !p.LastSync.IsZero() {
				line += ", last sync " + p.LastSync.UTC().Format(time.RFC3339)
			}
			if p.LastError != "" {
				line += fmt.Sprintf(", attempt %d failed: %s", p.Attempt, p.LastError)
			}
			if p.Warning != "" {
				line += "; " + p.Warning
			}
			if p.ClockSkew != nil {
				line += ", " + skewText(*p.ClockSkew)
			}
			fmt.Fprintln(e.stdout, line)
		}
		for _, sk := range all.ClockSkews {
			if !isPeer[sk.Replica] {
				fmt.Fprintf(e.stdout, "  writer %s (not a direct peer): %s\n", short(sk.Replica), skewText(sk))
			}
		}
		if all.ClockBehind {
			fmt.Fprintln(e.stdout, "  this device's clock looks behind: most writers it hears from are ahead of it; check its date and time")
		}
		for _, coll := range colls {
			fmt.Fprintf(e.stdout, "  %s: %d records\n", coll, counts[coll])
		}
		return nil
	})
}

// spaceLine is a space as `ferry status` shows it, from this device's
// records alone (no relay is asked).
type spaceLine struct {
	ID      string `json:"id"`
	Relay   string `json:"relay"`
	Epoch   uint64 `json:"epoch"`
	Removed bool   `json:"removed,omitempty"`
	Synced  bool   `json:"synced"` // a status line exists for it among the peers
}

func (s spaceLine) removedText() string {
	if s.Removed {
		return ", this device was removed from it"
	}
	return ""
}

func localSpaces(ctx context.Context, r *replica.Replica, peers []replica.Status) ([]spaceLine, error) {
	ids, err := r.Spaces(ctx)
	if err != nil {
		return nil, err
	}
	out := []spaceLine{}
	for _, id := range ids {
		sp, _, err := r.Space(ctx, id)
		if err != nil {
			return nil, err
		}
		l := spaceLine{ID: id, Relay: sp.RelayURL, Epoch: sp.Epoch()}
		for _, p := range peers {
			if p.Peer == "space:"+id {
				l.Synced = true
			}
		}
		l.Removed = r.SpaceRemoved(ctx, id)
		out = append(out, l)
	}
	return out, nil
}

// skewText describes a writer whose clock runs ahead.
func skewText(sk replica.ClockSkew) string {
	return fmt.Sprintf("clock at least %s ahead (%d writes stamped ahead, last seen %s)",
		sk.Ahead.Round(time.Second), sk.Writes, sk.Seen.UTC().Format(time.RFC3339))
}
