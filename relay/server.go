package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/transport"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Clock is the relay's time source: the authentication window and the
// long-poll timer. Tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// ServerOptions configures a Server. The zero value is usable: every zero
// field takes the default given in its comment.
type ServerOptions struct {
	// Logger receives one line per request (method, route, space ID, key
	// fingerprint, status, bundle size) and compactions. Nothing else is
	// logged: never a body. Default: discard.
	Logger *slog.Logger
	// Clock: default the system clock.
	Clock Clock
	// Window is how far a request's timestamp may be from the relay's
	// clock. Default 2 minutes.
	Window time.Duration
	// MaxWait caps a pull's long-poll. Default 30 seconds.
	MaxWait time.Duration
	// MaxSpaceBytes bounds the bundle bytes one space holds. Default 256 MiB.
	MaxSpaceBytes int64
	// MaxClientBytes bounds the bundle bytes one member holds in a space.
	// Default 128 MiB.
	MaxClientBytes int64
	// MaxSpaceBundles bounds the bundles one space holds. Default 65536.
	MaxSpaceBundles int64
	// MaxSpaces bounds the spaces the relay holds. Default 10000.
	MaxSpaces int
	// MaxSpacesPerKey bounds the spaces one key may create. Default 8.
	MaxSpacesPerKey int
	// MaxPullBundles and MaxPullBytes bound one pull response (a response
	// holds at least one bundle if any). Defaults 256 and 8 MiB.
	MaxPullBundles int
	MaxPullBytes   int
	// MaxNonces bounds the remembered request nonces. Default 1<<18.
	MaxNonces int
	// AllowCreate, if set, decides which keys may create spaces.
	AllowCreate func(ed25519.PublicKey) bool
	// NoSync skips fsync on writes: an acknowledged push may be lost on
	// power failure (not on a crash of the process). For tests.
	NoSync bool
	// NATS, if set, makes the server a stateless front-end of an external
	// NATS cluster (dir is then unused and may be ""). Default: an
	// embedded NATS server with JetStream, its store under dir/nats.
	NATS *NATSOptions
	// NATSListen opens a client port ("host:port") on the embedded NATS
	// server, e.g. for the nats CLI. Default: none; the relay talks to it
	// in-process.
	NATSListen string
	// Metrics, if set, receives the relay's counters (see NewMetrics).
	Metrics *Metrics
}

func (o *ServerOptions) validate() error {
	if o.Window < 0 || o.MaxWait < 0 || o.MaxSpaceBytes < 0 || o.MaxClientBytes < 0 || o.MaxSpaceBundles < 0 ||
		o.MaxSpaces < 0 || o.MaxSpacesPerKey < 0 || o.MaxPullBundles < 0 || o.MaxPullBytes < 0 || o.MaxNonces < 0 {
		return invalidf("negative server option")
	}
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	defi := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Window == 0 {
		o.Window = 2 * time.Minute
	}
	if o.MaxWait == 0 {
		o.MaxWait = 30 * time.Second
	}
	def(&o.MaxSpaceBytes, 256<<20)
	def(&o.MaxClientBytes, 128<<20)
	def(&o.MaxSpaceBundles, 1<<16)
	defi(&o.MaxSpaces, 10000)
	defi(&o.MaxSpacesPerKey, 8)
	defi(&o.MaxPullBundles, 256)
	defi(&o.MaxPullBytes, 8<<20)
	defi(&o.MaxNonces, 1<<18)
	if o.MaxPullBundles > maxWireArray {
		o.MaxPullBundles = maxWireArray
	}
	return nil
}

// Server is a zero-knowledge store-and-forward relay: an http.Handler over
// NATS JetStream, embedded in the process or an external cluster. It
// holds sealed bundles per space until every member has acknowledged
// them, and never sees a space key.
type Server struct {
	st      store
	opts    ServerOptions
	log     *slog.Logger
	met     *Metrics
	mux     *http.ServeMux
	nonces  nonceCache
	shared  *jsStore // a cluster front-end: nonces shared through the cluster
	ns      *server.Server
	started int64 // unix ms

	life   sync.RWMutex // held shared by requests, exclusively by Close
	closed bool
	done   chan struct{}

	wmu      sync.Mutex
	watchers map[string]chan struct{}
}

// NewServer opens (or creates) the relay's store: by default an embedded
// NATS server with JetStream under dir/nats (no port open unless
// opts.NATSListen); with opts.NATS, the streams of an external cluster.
// A dir written by the Badger relay of earlier versions is migrated
// first (see docs/relay.md). Errors: ErrInvalid for bad options,
// ErrUnavailable if the cluster cannot be reached.
func NewServer(dir string, opts ServerOptions) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		met:      opts.Metrics,
		nonces:   nonceCache{max: opts.MaxNonces},
		started:  opts.Clock.Now().UnixMilli(),
		done:     make(chan struct{}),
		watchers: map[string]chan struct{}{},
	}
	if s.met == nil {
		s.met = discardMetrics()
	}
	s.met.server = s
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := jsConfig{replicas: 1, window: opts.Window, maxMsg: maxNATSPayload, clock: opts.Clock}
	switch {
	case opts.NATS != nil:
		nc, err := connectNATS(opts.NATS, s.log)
		if err != nil {
			return nil, err
		}
		cfg.replicas, cfg.shared = opts.NATS.Replicas, true
		if cfg.replicas == 0 {
			cfg.replicas = 3
		}
		js, err := openJS(ctx, nc, cfg, limitsOf(opts), s.log, s.notify)
		if err != nil {
			nc.Close()
			return nil, err
		}
		s.st, s.shared = js, js
	default:
		if dir == "" {
			return nil, invalidf("empty relay directory")
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		js, ns, err := openEmbedded(ctx, dir, opts, cfg, s.notify)
		if err != nil {
			return nil, err
		}
		if hasBadger(dir) {
			if err := migrateBadger(ctx, dir, js); err != nil {
				js.close()
				return nil, fmt.Errorf("relay: %s holds a relay database of an earlier ferry (Badger) that could not be migrated (%s): move its files away to start empty, clients push their data again", dir, strings.ReplaceAll(err.Error(), "\n", " "))
			}
		}
		s.st, s.ns = js, ns
	}
	s.routes()
	return s, nil
}

// openEmbedded starts the embedded NATS server in dir and opens the
// relay's streams on it.
func openEmbedded(ctx context.Context, dir string, opts ServerOptions, cfg jsConfig, onPush func(string)) (*jsStore, *server.Server, error) {
	ns, err := embeddedServer(dir, opts.NATSListen, !opts.NoSync, opts.Logger)
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("ferry-relay"), nats.MaxReconnects(-1))
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("relay: connect to the embedded nats: %w", err)
	}
	js, err := openJS(ctx, nc, cfg, limitsOf(opts), opts.Logger, onPush)
	if err != nil {
		nc.Close()
		stop()
		return nil, nil, err
	}
	js.closeFn = stop
	return js, ns, nil
}

// NATSURL is the client URL of the embedded NATS server if
// ServerOptions.NATSListen opened one, else "".
func (s *Server) NATSURL() string {
	if s.ns == nil || s.opts.NATSListen == "" {
		return ""
	}
	return s.ns.ClientURL()
}

// Close wakes pending long-polls, waits for requests in progress and
// closes the store (and the embedded NATS server). Later requests get 503.
func (s *Server) Close() error {
	s.wmu.Lock()
	if s.closed {
		s.wmu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.wmu.Unlock()
	s.life.Lock() // waits for requests in progress
	defer s.life.Unlock()
	return s.st.close()
}

// watch returns a channel closed at the next push to space.
func (s *Server) watch(space string) <-chan struct{} {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ch, ok := s.watchers[space]
	if !ok {
		ch = make(chan struct{})
		s.watchers[space] = ch
	}
	return ch
}

func (s *Server) notify(space string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if ch, ok := s.watchers[space]; ok {
		close(ch)
		delete(s.watchers, space)
	}
}

// compact runs the store's compaction of space and logs what it did.
func (s *Server) compact(ctx context.Context, space string) error {
	n, err := s.st.compact(ctx, space)
	if n > 0 {
		s.log.Info("relay compacted", "space", space, "bundles", n)
		s.met.compactions.Inc()
		s.met.compacted.Add(float64(n))
	}
	return err
}

func fingerprint(k []byte) string { return transport.Fingerprint(k) }

// Endpoints. Every request is signed (see auth.go); space routes require a
// current member except create.
func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.mux.Handle("POST /v1/spaces/{space}", s.authed(maxMembersBody, s.handleCreate))
	s.mux.Handle("GET /v1/spaces/{space}/members", s.authed(0, s.handleGetMembers))
	s.mux.Handle("PUT /v1/spaces/{space}/members", s.authed(maxMembersBody, s.handleUpdateMembers))
	s.mux.Handle("POST /v1/spaces/{space}/bundles", s.authed(MaxBundleSize, s.handlePush))
	s.mux.Handle("GET /v1/spaces/{space}/bundles", s.authed(0, s.handlePull))
	s.mux.Handle("POST /v1/spaces/{space}/ack", s.authed(0, s.handleAck))
	s.mux.Handle("GET /v1/spaces/{space}/status", s.authed(0, s.handleStatus))
	s.mux.Handle("GET /v1/spaces/{space}/epochs", s.authed(0, s.handleGetEpochs))
	s.mux.Handle("POST /v1/spaces/{space}/epochs", s.authed(maxEpochRecord, s.handlePutEpoch))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.life.TryRLock() {
		writeError(w, herr(http.StatusServiceUnavailable, codeClosed, "relay closing"))
		return
	}
	defer s.life.RUnlock()
	if s.isClosed() {
		writeError(w, herr(http.StatusServiceUnavailable, codeClosed, "relay closed"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// request is an authenticated request.
type request struct {
	key   ed25519.PublicKey
	space string
	body  []byte
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// authed reads a body of at most limit bytes, authenticates the request
// and logs it.
func (s *Server) authed(limit int64, h func(w http.ResponseWriter, r *http.Request, req *request) error) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &statusWriter{ResponseWriter: rw}
		req := &request{space: r.PathValue("space")}
		start := time.Now()
		err := s.authenticate(w, r, limit, req)
		if err == nil {
			err = h(w, r, req)
		}
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) {
				if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
					he = herr(http.StatusServiceUnavailable, codeBusy, "request cancelled")
				} else {
					s.log.Error("relay internal error", "route", r.Pattern, "space", logSpace(req.space), "err", err)
					he = herr(http.StatusInternalServerError, codeInternal, "internal error")
				}
			}
			writeError(w, he)
			s.met.errors.WithLabelValues(he.code).Inc()
			if he.code == codeQuota || he.code == codeTooLarge {
				s.met.quota.Inc()
			}
			if r.Pattern == "POST /v1/spaces/{space}/bundles" {
				s.met.pushes.WithLabelValues("refused").Inc()
			}
		}
		s.met.requests.WithLabelValues(r.Pattern).Observe(time.Since(start).Seconds())
		attrs := []any{"method", r.Method, "route", r.Pattern, "space", logSpace(req.space), "status", w.status}
		if req.key != nil {
			attrs = append(attrs, "key", fingerprint(req.key))
		}
		if r.Method == http.MethodPost && len(req.body) > 0 && isBucket(len(req.body)) {
			attrs = append(attrs, "size", len(req.body))
		}
		s.log.Info("relay request", attrs...)
	})
}

// logSpace logs a space ID only if it has the form of one (the path is
// client-controlled).
func logSpace(s string) string {
	if validSpaceID(s) {
		return s
	}
	return "-"
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, limit int64, req *request) error {
	if !validSpaceID(req.space) {
		return herr(http.StatusBadRequest, codeBadReq, "malformed space ID")
	}
	a, ok := parseAuth(r.Header)
	if !ok {
		return herr(http.StatusUnauthorized, codeAuth, "missing or malformed authentication headers")
	}
	now := s.opts.Clock.Now().UnixMilli()
	win := s.opts.Window.Milliseconds()
	if a.ts < now-win || a.ts > now+win || a.ts < s.started {
		e := herr(http.StatusUnauthorized, codeStale, "timestamp outside the window")
		e.now = now
		return e
	}
	if r.ContentLength > limit {
		return herr(http.StatusRequestEntityTooLarge, codeTooLarge, "body of %d bytes exceeds %d", r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return herr(http.StatusRequestEntityTooLarge, codeTooLarge, "body exceeds %d bytes", limit)
		}
		return herr(http.StatusBadRequest, codeBadReq, "truncated body")
	}
	if !a.verify(r, body) {
		return herr(http.StatusUnauthorized, codeAuth, "bad signature")
	}
	ok, full := s.nonces.add(a.key, a.nonce, a.ts+win, now)
	if full {
		return herr(http.StatusServiceUnavailable, codeBusy, "too many requests in the window")
	}
	if !ok {
		return herr(http.StatusUnauthorized, codeReplay, "replayed nonce")
	}
	if s.shared != nil { // another front-end may have seen it
		seen, err := s.shared.seenNonce(r.Context(), a.key, []byte(a.nonce))
		if err != nil {
			return err
		}
		if seen {
			return herr(http.StatusUnauthorized, codeReplay, "replayed nonce")
		}
	}
	req.key, req.body = a.key, body
	return nil
}

func writeError(w http.ResponseWriter, e *httpError) {
	body := errorBody{Code: e.code, Error: e.msg, Expected: e.expected, Now: e.now}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeCBOR(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/cbor")
	w.WriteHeader(status)
	_, _ = w.Write(marshal(v))
}

func (s *Server) decodeMembersBody(req *request) (SignedMembers, error) {
	sm, err := DecodeMembers(req.body)
	if err != nil {
		return sm, herr(http.StatusBadRequest, codeBadReq, "malformed member list")
	}
	if sm.Space != req.space {
		return sm, herr(http.StatusBadRequest, codeBadReq, "member list names another space")
	}
	if !sm.Signer.Equal(req.key) {
		return sm, herr(http.StatusForbidden, codeNotMember, "member list not signed by the requester")
	}
	return sm, nil
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request, req *request) error {
	sm, err := s.decodeMembersBody(req)
	if err != nil {
		return err
	}
	if sm.Version != 1 || !sm.Has(req.key) {
		return herr(http.StatusBadRequest, codeBadReq, "a new space's list is version 1 and includes its creator")
	}
	if s.opts.AllowCreate != nil && !s.opts.AllowCreate(req.key) {
		return herr(http.StatusForbidden, codeNotMember, "this key may not create spaces")
	}
	if err := s.st.createSpace(r.Context(), sm, req.body, req.key); err != nil {
		return err
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleGetMembers(w http.ResponseWriter, r *http.Request, req *request) error {
	raw, err := s.st.members(r.Context(), req.space, req.key)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/cbor")
	_, _ = w.Write(raw)
	return nil
}

func (s *Server) handleUpdateMembers(w http.ResponseWriter, r *http.Request, req *request) error {
	sm, err := s.decodeMembersBody(req)
	if err != nil {
		return err
	}
	if err := s.st.updateMembers(r.Context(), sm, req.body); err != nil {
		return err
	}
	if err := s.compact(r.Context(), req.space); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request, req *request) error {
	sender, counter, err := bundleHeader(req.space, req.body)
	if err != nil {
		return herr(http.StatusBadRequest, codeBadReq, "bundle does not verify")
	}
	if !sender.Equal(req.key) {
		return herr(http.StatusForbidden, codeNotMember, "bundle not sent by the requester")
	}
	res, err := s.st.storeBundle(r.Context(), req.space, sender, counter, req.body)
	if err != nil {
		return err
	}
	if !res.dup {
		s.notify(req.space)
		s.met.pushes.WithLabelValues("stored").Inc()
		s.met.pushedBytes.Add(float64(len(req.body)))
	} else {
		s.met.pushes.WithLabelValues("duplicate").Inc()
	}
	writeCBOR(w, http.StatusOK, pushResponse{Seq: res.seq, Duplicate: res.dup})
	return nil
}

func queryUint(r *http.Request, name string, def uint64) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, herr(http.StatusBadRequest, codeBadReq, "malformed %s", name)
	}
	return n, nil
}

func (s *Server) handlePull(w http.ResponseWriter, r *http.Request, req *request) error {
	after, err := queryUint(r, "after", 0)
	if err != nil {
		return err
	}
	waitMS, err := queryUint(r, "wait", 0)
	if err != nil {
		return err
	}
	maxN, err := queryUint(r, "limit", uint64(s.opts.MaxPullBundles))
	if err != nil {
		return err
	}
	maxB, err := queryUint(r, "bytes", uint64(s.opts.MaxPullBytes))
	if err != nil {
		return err
	}
	maxN = min(max(maxN, 1), uint64(s.opts.MaxPullBundles))
	maxB = min(max(maxB, 1), uint64(s.opts.MaxPullBytes))
	wait := min(time.Duration(min(waitMS, uint64(time.Hour.Milliseconds())))*time.Millisecond, s.opts.MaxWait)
	var timer <-chan time.Time
	for {
		ch := s.watch(req.space) // before reading, so no push is missed
		resp, err := s.st.loadBundles(r.Context(), req.space, req.key, after, int(maxN), int(maxB))
		if err != nil {
			return err
		}
		if len(resp.Envelopes) > 0 || wait <= 0 {
			s.met.pulls.Inc()
			s.met.pulled.Add(float64(len(resp.Envelopes)))
			writeCBOR(w, http.StatusOK, resp)
			return nil
		}
		if timer == nil {
			timer = s.opts.Clock.After(wait)
			s.met.waits.Inc()
		}
		select {
		case <-ch:
		case <-timer:
			wait = 0
		case <-s.done:
			wait = 0
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
}

func (s *Server) handleAck(w http.ResponseWriter, r *http.Request, req *request) error {
	seq, err := queryUint(r, "seq", 0)
	if err != nil {
		return err
	}
	if err := s.st.ack(r.Context(), req.space, req.key, seq); err != nil {
		return err
	}
	if err := s.compact(r.Context(), req.space); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, req *request) error {
	st, err := s.st.status(r.Context(), req.space, req.key)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(st)
}

func (s *Server) handleGetEpochs(w http.ResponseWriter, r *http.Request, req *request) error {
	recs, err := s.st.epochs(r.Context(), req.space, req.key)
	if err != nil {
		return err
	}
	writeCBOR(w, http.StatusOK, epochsResponse{Records: recs})
	return nil
}

func (s *Server) handlePutEpoch(w http.ResponseWriter, r *http.Request, req *request) error {
	rec, _, err := DecodeEpochRecord(req.body)
	if err != nil {
		return herr(http.StatusBadRequest, codeBadReq, "malformed key-epoch record")
	}
	if rec.Space != req.space {
		return herr(http.StatusBadRequest, codeBadReq, "key-epoch record names another space")
	}
	if !rec.Signer.Equal(req.key) {
		return herr(http.StatusForbidden, codeNotMember, "key-epoch record not signed by the requester")
	}
	if err := s.st.putEpoch(r.Context(), req.space, req.key, rec.Epoch, req.body); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Serving is a Server listening on an address (see Start).
type Serving struct {
	srv    *http.Server
	url    string
	cancel context.CancelFunc
	served chan struct{}
	inner  sync.RWMutex // held shared by each request, exclusively by Close
	once   sync.Once
	stop   func() bool
}

// Start serves s on addr ("127.0.0.1:0" picks a port) with TLS if
// tlsConfig is not nil. Cancelling ctx closes the listener as Close does.
// Close the Serving before the Server.
func (s *Server) Start(ctx context.Context, addr string, tlsConfig *tls.Config) (*Serving, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay: listen: %w", err)
	}
	scheme := "http"
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		if len(cfg.NextProtos) == 0 {
			cfg.NextProtos = []string{"http/1.1"}
		}
		ln = tls.NewListener(ln, cfg)
		scheme = "https"
	}
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v := &Serving{url: scheme + "://" + ln.Addr().String(), cancel: cancel, served: make(chan struct{})}
	v.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !v.inner.TryRLock() {
				writeError(w, herr(http.StatusServiceUnavailable, codeClosed, "relay closing"))
				return
			}
			defer v.inner.RUnlock()
			s.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(v.served)
		_ = v.srv.Serve(ln)
	}()
	v.stop = context.AfterFunc(ctx, func() { _ = v.Close() })
	return v, nil
}

// URL is the base URL to give clients.
func (v *Serving) URL() string { return v.url }

// Close stops listening, ends requests in progress (long-polls included)
// and waits for every goroutine it started.
func (v *Serving) Close() error {
	var err error
	v.once.Do(func() {
		if v.stop != nil {
			v.stop()
		}
		v.cancel()
		err = v.srv.Close()
		<-v.served
		v.inner.Lock() // waits for every request in progress; later ones get 503

	})
	return err
}
