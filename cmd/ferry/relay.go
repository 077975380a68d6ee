package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/ferrysync/ferry/relay"
)

var relayCmd = &command{name: "relay", args: "--listen ADDR --dir DIR [--tls-cert FILE --tls-key FILE]",
	summary: "run the zero-knowledge relay: it stores and forwards sealed bundles it cannot read",
	example: "ferry relay --listen 127.0.0.1:7443 --dir /var/lib/ferry-relay",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &relayCommand{env: e}
		fs.StringVar(&c.listen, "listen", "127.0.0.1:7443", "the TCP address to listen on")
		fs.StringVar(&c.dataDir, "dir", "", "where the relay keeps its logs (required)")
		fs.StringVar(&c.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
		fs.StringVar(&c.tlsKey, "tls-key", "", "and this key (PEM)")
		return c
	}}

// relayCommand is `ferry relay`: the relay server, until ctx ends.
type relayCommand struct {
	*env
	listen          string // host:port
	dataDir         string // --dir: the relay's data (not a replica's store)
	tlsCert, tlsKey string // PEM files; both empty for plain HTTP
}

func (c *relayCommand) Run(ctx context.Context, args []string) error {
	if err := needArgs(args, 0); err != nil {
		return err
	}
	if c.dataDir == "" {
		return usagef("--dir is required")
	}
	var tc *tls.Config
	if c.tlsCert != "" || c.tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return usagef("tls: %v", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	}
	opts := relay.ServerOptions{Logger: slog.New(slog.NewTextHandler(c.stderr, nil))}
	if off := c.getenv("FERRY_TEST_CLOCK_OFFSET"); off != "" {
		// For trying the members' expiry policy: the relay's clock runs
		// off by the given duration.
		d, err := time.ParseDuration(off)
		if err != nil {
			return usagef("FERRY_TEST_CLOCK_OFFSET: %v", err)
		}
		opts.Clock = offsetClock(d)
	}
	srv, err := relay.NewServer(c.dataDir, opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	run, err := srv.Start(ctx, c.listen, tc)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "relay on %s (data in %s)\n", run.URL(), c.dataDir)
	<-ctx.Done()
	return run.Close()
}

// offsetClock is the system clock moved by a fixed duration.
type offsetClock time.Duration

func (o offsetClock) Now() time.Time                         { return time.Now().Add(time.Duration(o)) }
func (o offsetClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
