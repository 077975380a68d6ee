package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSOptions makes the relay a stateless front-end of an external NATS
// cluster (ServerOptions.NATS). Any number of front-ends may serve the
// same cluster: each keeps nothing of its own.
type NATSOptions struct {
	// URLs are the cluster's client URLs ("nats://host:4222"); the
	// connection fails over between them. Required.
	URLs []string
	// Creds is a NATS credentials file (JWT and NKey seed). Optional.
	Creds string
	// TLSCA is a PEM file of the CAs that sign the servers' certificates;
	// TLSCert and TLSKey are a client certificate, if the servers ask for
	// one. Optional.
	TLSCA, TLSCert, TLSKey string
	// Replicas is the replication factor of the relay's streams when this
	// front-end creates them. Default 3 (one node of three may be lost).
	Replicas int
	// Name identifies the connection in the servers' monitoring.
	// Default "ferry-relay".
	Name string
}

// maxNATSPayload is the NATS message size the relay needs: the largest
// bundle plus headers.
const maxNATSPayload = MaxBundleSize + 64<<10

// embeddedServer starts a NATS server with JetStream inside the process,
// its store under dir/nats, with no port open unless listen is set
// ("host:port"). sync fsyncs every write before acknowledging it.
func embeddedServer(dir, listen string, sync bool, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName:             "ferry-relay",
		JetStream:              true,
		StoreDir:               filepath.Join(dir, "nats"),
		DontListen:             listen == "",
		MaxPayload:             maxNATSPayload,
		SyncAlways:             sync,
		NoSigs:                 true,
		NoSystemAccount:        true,
		JetStreamMaxMemory:     64 << 20,
		DisableJetStreamBanner: true,
	}
	if listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, invalidf("--nats-listen %q: %s", listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, invalidf("--nats-listen %q: bad port", listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("relay: embedded nats: %w", err)
	}
	ns.SetLoggerV2(&natsLogger{log}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("relay: embedded nats did not start")
	}
	return ns, nil
}

// connectNATS connects to an external cluster.
func connectNATS(o *NATSOptions, log *slog.Logger) (*nats.Conn, error) {
	if len(o.URLs) == 0 {
		return nil, invalidf("no NATS URL")
	}
	name := o.Name
	if name == "" {
		name = "ferry-relay"
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("relay: nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("relay: nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if o.Creds != "" {
		if _, err := os.Stat(o.Creds); err != nil {
			return nil, invalidf("nats credentials: %s", err)
		}
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: nats %s: %w", ErrUnavailable, strings.Join(o.URLs, ","), err)
	}
	if nc.MaxPayload() < maxNATSPayload {
		nc.Close()
		return nil, invalidf("the NATS servers accept messages of %d bytes; the relay needs max_payload >= %d (set max_payload: 8MB in their configuration)", nc.MaxPayload(), maxNATSPayload)
	}
	return nc, nil
}

// leaderGetMsg reads the last message on subject from the stream's
// leader (STREAM.MSG.GET, not a direct get that a lagging replica may
// answer).
func leaderGetMsg(ctx context.Context, nc *nats.Conn, stream, subject string) (*jetstream.RawStreamMsg, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string `json:"subject"`
			Sequence uint64 `json:"seq"`
			Data     []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("relay: nats answer: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, resp.Error
	}
	if resp.Message == nil {
		return nil, errors.New("relay: nats answer without a message")
	}
	return &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Sequence, Data: resp.Message.Data}, nil
}

// natsLogger passes the embedded server's log to slog: notices at debug
// (the server is an implementation detail), warnings and errors as such.
type natsLogger struct{ l *slog.Logger }

func (n *natsLogger) Noticef(format string, v ...any) {
	n.l.Debug("nats: " + fmt.Sprintf(format, v...))
}
func (n *natsLogger) Warnf(format string, v ...any)  { n.l.Warn("nats: " + fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any) { n.l.Error("nats: " + fmt.Sprintf(format, v...)) }
func (n *natsLogger) Errorf(format string, v ...any) { n.l.Error("nats: " + fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(format string, v ...any) { n.l.Debug("nats: " + fmt.Sprintf(format, v...)) }
func (n *natsLogger) Tracef(format string, v ...any) {}
