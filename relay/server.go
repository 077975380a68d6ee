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
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/ferrysync/ferry/transport"
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
	// power failure. For tests.
	NoSync bool
	// GCInterval is how often Badger's value log is garbage-collected.
	// Default 10 minutes; negative disables.
	GCInterval time.Duration

	smallFiles bool // tests: 1 MiB memtables and value-log files
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
	if o.GCInterval == 0 {
		o.GCInterval = 10 * time.Minute
	}
	return nil
}

// Server is a zero-knowledge store-and-forward relay: an http.Handler over
// a Badger database of its own. It holds sealed bundles per space until
// every member has acknowledged them, and never sees a space key.
type Server struct {
	db      *badger.DB
	opts    ServerOptions
	log     *slog.Logger
	mux     *http.ServeMux
	nonces  nonceCache
	started int64 // unix ms

	life   sync.RWMutex // held shared by requests, exclusively by Close
	closed bool
	done   chan struct{}

	wmu      sync.Mutex
	watchers map[string]chan struct{}

	gcStop chan struct{}
	gcDone chan struct{}
}

// NewServer opens (or creates) the relay database in dir.
func NewServer(dir string, opts ServerOptions) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, invalidf("empty relay directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	bo := badger.DefaultOptions(dir).
		WithLogger(nil).
		WithSyncWrites(!opts.NoSync).
		WithCompression(options.None). // bundles are ciphertext
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).
		WithBlockCacheSize(16 << 20).
		WithValueLogFileSize(256 << 20).
		WithValueThreshold(64 << 10)
	if opts.smallFiles {
		bo = bo.WithMemTableSize(1 << 20).WithValueLogFileSize(1 << 20).WithBlockCacheSize(1 << 20)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("relay: open database: %w", err)
	}
	s := &Server{
		db:       db,
		opts:     opts,
		log:      opts.Logger,
		nonces:   nonceCache{max: opts.MaxNonces},
		started:  opts.Clock.Now().UnixMilli(),
		done:     make(chan struct{}),
		watchers: map[string]chan struct{}{},
		gcStop:   make(chan struct{}),
		gcDone:   make(chan struct{}),
	}
	s.routes()
	if opts.GCInterval > 0 {
		go s.gcLoop(opts.GCInterval)
	} else {
		close(s.gcDone)
	}
	return s, nil
}

func (s *Server) gcLoop(every time.Duration) {
	defer close(s.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// Close wakes pending long-polls, waits for requests in progress, stops the
// garbage collector and closes the database. Later requests get 503.
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
	close(s.gcStop)
	<-s.gcDone
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("relay: close database: %w", err)
	}
	return nil
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
		}
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
	if err := s.createSpace(r.Context(), sm, req.body, req.key); err != nil {
		return err
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) handleGetMembers(w http.ResponseWriter, r *http.Request, req *request) error {
	raw, err := s.members(req.space, req.key)
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
	if err := s.updateMembers(r.Context(), sm, req.body); err != nil {
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
	res, err := s.storeBundle(r.Context(), req.space, sender, counter, req.body)
	if err != nil {
		return err
	}
	if !res.dup {
		s.notify(req.space)
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
		resp, err := s.loadBundles(req.space, req.key, after, int(maxN), int(maxB))
		if err != nil {
			return err
		}
		if len(resp.Envelopes) > 0 || wait <= 0 {
			writeCBOR(w, http.StatusOK, resp)
			return nil
		}
		if timer == nil {
			timer = s.opts.Clock.After(wait)
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
	if err := s.ack(r.Context(), req.space, req.key, seq); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, req *request) error {
	st, err := s.status(req.space, req.key)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(st)
}

func (s *Server) handleGetEpochs(w http.ResponseWriter, r *http.Request, req *request) error {
	recs, err := s.epochs(req.space, req.key)
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
	if err := s.putEpoch(r.Context(), req.space, req.key, rec.Epoch, req.body); err != nil {
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
