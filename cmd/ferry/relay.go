package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/ferrysync/ferry/relay"
	"github.com/ferrysync/ferry/replica"
)

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

func syncRelayOnce(ctx context.Context, e *env, r *replica.Replica, url string, asJSON bool) error {
	id, err := spaceFor(ctx, r, url)
	if err != nil {
		return err
	}
	st, err := r.SyncRelay(ctx, id)
	if err != nil {
		return err
	}
	if asJSON {
		return e.printJSON(st)
	}
	fmt.Fprintf(e.stdout, "synced through %s: pushed %d records in %d bundles, applied %d records from %d bundles, %d conflicts\n",
		url, st.RecordsPushed, st.BundlesPushed, st.RecordsApplied, st.BundlesPulled, st.Conflicts)
	return nil
}

func init() {
	register(&command{name: "relay", args: "--listen ADDR --dir DIR [--tls-cert FILE --tls-key FILE]",
		summary: "run the zero-knowledge relay: it stores and forwards sealed bundles it cannot read",
		example: "ferry relay --listen 127.0.0.1:7443 --dir /var/lib/ferry-relay",
		flags: func(fs *flag.FlagSet) {
			fs.String("listen", "127.0.0.1:7443", "the TCP address to listen on")
			fs.String("dir", "", "where the relay keeps its logs (required)")
			fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM)")
			fs.String("tls-key", "", "and this key (PEM)")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if err := needArgs(args, 0); err != nil {
				return err
			}
			dir := flagStr(fs, "dir")
			if dir == "" {
				return usagef("--dir is required")
			}
			var tc *tls.Config
			if cf, kf := flagStr(fs, "tls-cert"), flagStr(fs, "tls-key"); cf != "" || kf != "" {
				cert, err := tls.LoadX509KeyPair(cf, kf)
				if err != nil {
					return usagef("tls: %v", err)
				}
				tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
			}
			srv, err := relay.NewServer(dir, relay.ServerOptions{Logger: slog.New(slog.NewTextHandler(e.stderr, nil))})
			if err != nil {
				return err
			}
			defer srv.Close()
			run, err := srv.Start(ctx, flagStr(fs, "listen"), tc)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "relay on %s (data in %s)\n", run.URL(), dir)
			<-ctx.Done()
			return run.Close()
		}})

	register(&command{name: "space", args: "create RELAY-URL --collections A,B | code | invite SPACE-ID JOIN-CODE --out FILE | join FILE --collections A,B | list",
		summary: "devices that are rarely online together share a space on a relay",
		example: `ferry space create http://127.0.0.1:7443 --collections notes     # first device
ferry space code                                                 # new device: prints its join code
ferry space invite SPACE-ID 'ferry-join1:...' --out invite.age     # first device
ferry space join invite.age --collections notes                  # new device
ferry sync http://127.0.0.1:7443                                 # any device, any time`,
		flags: func(fs *flag.FlagSet) {
			collectionFlags(fs, "the space syncs")
			fs.String("out", "", "invite: write the sealed invitation here")
			fs.Bool("json", false, "list: print JSON")
		},
		run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
			if len(args) == 0 {
				return usagef("want create, code, invite, join or list")
			}
			return e.withReplica(ctx, func(r *replica.Replica) error {
				switch args[0] {
				case "create":
					if len(args) != 2 || !isRelayURL(args[1]) {
						return usagef("want create RELAY-URL (http:// or https://)")
					}
					sp, err := r.CreateSpace(ctx, args[1], collectionsOf(fs))
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "created space %s on %s\n", sp.ID, sp.RelayURL)
				case "code":
					code, err := r.JoinCode()
					if err != nil {
						return err
					}
					fmt.Fprintln(e.stdout, code)
				case "invite":
					if len(args) != 3 || flagStr(fs, "out") == "" {
						return usagef("want invite SPACE-ID JOIN-CODE --out FILE")
					}
					inv, err := r.Invite(ctx, args[1], args[2])
					if err != nil {
						return err
					}
					if err := os.WriteFile(flagStr(fs, "out"), inv, 0o600); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "wrote the invitation to %s; only the invited device can open it\n", flagStr(fs, "out"))
				case "join":
					if len(args) != 2 {
						return usagef("want join FILE --collections A,B")
					}
					b, err := os.ReadFile(args[1])
					if err != nil {
						return err
					}
					sp, err := r.JoinSpace(ctx, b, collectionsOf(fs))
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "joined space %s on %s\n", sp.ID, sp.RelayURL)
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
					if flagBool(fs, "json") {
						return e.printJSON(rows)
					}
					for _, x := range rows {
						fmt.Fprintf(e.stdout, "%s %s\n", x.ID, x.Relay)
					}
				default:
					return usagef("unknown space subcommand %q", args[0])
				}
				return nil
			})
		}})
}
