package collector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"sync"
	"time"
)

// ServerOptions configure a Server. The zero value is usable.
type ServerOptions struct {
	// MaxBody bounds a request body (DefaultMaxBody if 0); a larger one is
	// refused with 413 before it is read whole.
	MaxBody int64
	// MaxBatches bounds the batches held in memory (DefaultMaxBatches if
	// 0); when full, the server answers 503 and the sender retries later.
	MaxBatches int
}

// DefaultMaxBatches is the default of ServerOptions.MaxBatches.
const DefaultMaxBatches = 4096

func (o *ServerOptions) validate() error {
	if o.MaxBody < 0 || o.MaxBatches < 0 {
		return fmt.Errorf("%w: negative limit", ErrBadOptions)
	}
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.MaxBatches == 0 {
		o.MaxBatches = DefaultMaxBatches
	}
	return nil
}

// Server is a small collector: an http.Handler that accepts batches POSTed
// as application/cbor or application/json (on any path) and holds them in
// memory.
//
//	204  stored
//	400  the body is not a valid batch
//	405  not a POST
//	413  the body exceeds MaxBody
//	415  another content type
//	503  MaxBatches are held already
type Server struct {
	opts ServerOptions

	mu      sync.Mutex
	batches []Batch
}

// NewServer returns a Server with opts.
func NewServer(opts ServerOptions) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Server{opts: opts}, nil
}

// Batches returns copies of the batches received so far, in arrival order.
func (s *Server) Batches() []Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Batch, len(s.batches))
	for i, b := range s.batches {
		out[i] = cloneBatch(b)
	}
	return out
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a batch", http.StatusMethodNotAllowed)
		return
	}
	var f Format
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err != nil:
		http.Error(w, "bad content type", http.StatusUnsupportedMediaType)
		return
	case mt == ContentTypeCBOR:
		f = CBOR
	case mt == ContentTypeJSON:
		f = JSON
	default:
		http.Error(w, "content type must be application/cbor or application/json", http.StatusUnsupportedMediaType)
		return
	}
	if r.ContentLength > s.opts.MaxBody {
		http.Error(w, "batch too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "batch too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the body failed", http.StatusBadRequest)
		return
	}
	b, err := decodeBatch(f, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	full := len(s.batches) >= s.opts.MaxBatches
	if !full {
		s.batches = append(s.batches, b)
	}
	s.mu.Unlock()
	if full {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "collector full", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Running is a Server listening on a TCP address, started by Start.
type Running struct {
	srv  *http.Server
	ln   net.Listener
	stop func() bool // unregisters the ctx watcher

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup

	once     sync.Once
	serveErr error
	served   chan struct{}
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves s until ctx ends or
// Close is called.
func (s *Server) Start(ctx context.Context, addr string) (*Running, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("collector: listen: %w", err)
	}
	r := &Running{ln: ln, served: make(chan struct{})}
	r.srv = &http.Server{
		Handler:           http.HandlerFunc(r.track(s)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		defer close(r.served)
		if err := r.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			r.serveErr = err
		}
	}()
	r.stop = context.AfterFunc(ctx, func() { r.shutdown() })
	return r, nil
}

// track counts the requests in flight so Close can wait for them.
func (r *Running) track(h http.Handler) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			http.Error(w, "closing", http.StatusServiceUnavailable)
			return
		}
		r.inflight.Add(1)
		r.mu.Unlock()
		defer r.inflight.Done()
		h.ServeHTTP(w, req)
	}
}

// URL is the server's base URL, "http://host:port/".
func (r *Running) URL() string { return "http://" + r.ln.Addr().String() + "/" }

// Addr is the address the server listens on.
func (r *Running) Addr() string { return r.ln.Addr().String() }

// Close stops the server: it closes the listener and every connection and
// returns once the serving goroutine and every handler have returned. It
// returns the serving error, if any; calling it again returns the same.
func (r *Running) Close() error {
	r.stop()
	r.shutdown()
	return r.serveErr
}

func (r *Running) shutdown() {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		_ = r.srv.Close()
		<-r.served
		r.inflight.Wait()
	})
}
