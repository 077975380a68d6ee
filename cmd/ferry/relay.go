package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ferrysync/ferry/relay"
)

var relayCmd = &command{name: "relay", args: "--listen ADDR (--dir DIR | --nats URL[,URL...]) [--tls-cert FILE --tls-key FILE] [--metrics ADDR]",
	summary: "run the zero-knowledge relay: it stores and forwards sealed bundles it cannot read",
	example: "ferry relay --listen 127.0.0.1:7443 --dir /var/lib/ferry-relay\n" +
		"ferry relay --listen :7443 --nats nats://n1:4222,nats://n2:4222,nats://n3:4222   # a front-end of a NATS cluster",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &relayCommand{env: e}
		fs.StringVar(&c.listen, "listen", "127.0.0.1:7443", "the TCP address to listen on")
		fs.StringVar(&c.dataDir, "dir", "", "where the relay keeps its data (an embedded NATS JetStream store); required without --nats")
		fs.StringVar(&c.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
		fs.StringVar(&c.tlsKey, "tls-key", "", "and this key (PEM)")
		fs.StringVar(&c.nats, "nats", "", "run as a stateless front-end of this NATS cluster (comma-separated client URLs) instead of --dir")
		fs.StringVar(&c.natsCreds, "nats-creds", "", "with --nats: a NATS credentials file")
		fs.StringVar(&c.natsCA, "nats-tls-ca", "", "with --nats: the CA certificates (PEM) of the NATS servers")
		fs.StringVar(&c.natsCert, "nats-tls-cert", "", "with --nats: a client certificate (PEM) for the NATS servers")
		fs.StringVar(&c.natsKey, "nats-tls-key", "", "with --nats: its key (PEM)")
		fs.IntVar(&c.natsReplicas, "nats-replicas", 3, "with --nats: replicas of the relay's streams when this front-end creates them")
		fs.StringVar(&c.natsListen, "nats-listen", "", "with --dir: open a NATS client port on the embedded server at this address, without authentication: bind it to loopback (default none)")
		fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics on http://ADDR/metrics (default off)")
		fs.StringVar(&c.logLevel, "log-level", "info", "log level on stderr: debug, info, warn or error")
		return c
	}}

// relayCommand is `ferry relay`: the relay server, until ctx ends.
type relayCommand struct {
	*env
	listen          string // host:port
	dataDir         string // --dir: the relay's data (not a replica's store)
	tlsCert, tlsKey string // PEM files; both empty for plain HTTP
	nats            string // --nats: comma-separated URLs, or "" for the embedded server
	natsCreds       string
	natsCA          string
	natsCert        string
	natsKey         string
	natsReplicas    int
	natsListen      string
	metrics         string
	logLevel        string
}

func (c *relayCommand) Run(ctx context.Context, args []string) error {
	if err := needArgs(args, 0); err != nil {
		return err
	}
	level, err := parseLevel(c.logLevel)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
	opts := relay.ServerOptions{Logger: log}
	switch {
	case c.nats != "" && c.dataDir != "":
		return usagef("--dir and --nats exclude each other: a front-end of a NATS cluster keeps no data")
	case c.nats != "":
		if c.natsListen != "" {
			return usagef("--nats-listen is for the embedded server (--dir)")
		}
		if c.natsReplicas < 1 || c.natsReplicas > 5 {
			return usagef("--nats-replicas %d: want 1 to 5", c.natsReplicas)
		}
		var urls []string
		for _, u := range strings.Split(c.nats, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
		opts.NATS = &relay.NATSOptions{URLs: urls, Creds: c.natsCreds, TLSCA: c.natsCA, TLSCert: c.natsCert, TLSKey: c.natsKey, Replicas: c.natsReplicas}
	case c.dataDir == "":
		return usagef("--dir (or --nats) is required")
	default:
		if c.natsCreds != "" || c.natsCA != "" || c.natsCert != "" || c.natsKey != "" {
			return usagef("--nats-creds and --nats-tls-* go with --nats")
		}
		opts.NATSListen = c.natsListen
	}
	var tc *tls.Config
	if c.tlsCert != "" || c.tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return usagef("tls: %v", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	}
	if off := c.getenv("FERRY_TEST_CLOCK_OFFSET"); off != "" {
		// For trying the members' expiry policy: the relay's clock runs
		// off by the given duration.
		d, err := time.ParseDuration(off)
		if err != nil {
			return usagef("FERRY_TEST_CLOCK_OFFSET: %v", err)
		}
		opts.Clock = offsetClock(d)
	}
	if c.metrics != "" {
		reg := newRegistry()
		opts.Metrics = relay.NewMetrics(reg)
		url, stop, err := serveMetrics(ctx, c.metrics, reg, log)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(c.stderr, "metrics on %s\n", url)
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
	if c.nats != "" {
		fmt.Fprintf(c.stdout, "relay on %s (front-end of nats %s)\n", run.URL(), c.nats)
	} else {
		fmt.Fprintf(c.stdout, "relay on %s (data in %s)\n", run.URL(), c.dataDir)
		if u := srv.NATSURL(); u != "" {
			fmt.Fprintf(c.stderr, "embedded nats on %s\n", u)
		}
	}
	<-ctx.Done()
	return run.Close()
}

// offsetClock is the system clock moved by a fixed duration.
type offsetClock time.Duration

func (o offsetClock) Now() time.Time                         { return time.Now().Add(time.Duration(o)) }
func (o offsetClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
