package collector

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func startServer(t *testing.T, opts ServerOptions) (*Server, *Running) {
	t.Helper()
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	run, err := srv.Start(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv, run
}

// waits records the waits a destination asks for, without waiting.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) wait(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) got() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

func sampleBatch(withBytes bool) Batch {
	rec := map[string]any{
		"user":  "iqbxivv5y2wun37w",
		"age":   "30-40",
		"steps": int64(-12),
		"big":   int64(math.MaxInt64),
		"ratio": 2.5,
		"ok":    true,
		"none":  nil,
		"where": map[string]any{"lat": 52.5, "lon": 13.4},
		"tags":  []any{"a", int64(1), []any{}, map[string]any{}},
	}
	if withBytes {
		rec["blob"] = []byte{0, 1, 2, 0xff}
		rec["three"] = 3.0 // a float that CBOR writes as float16
	}
	return Batch{Purpose: "fitness-stats", Collection: "workouts", Records: []map[string]any{rec, {"user": "other"}}}
}

func TestEndToEnd(t *testing.T) {
	for _, f := range []Format{CBOR, JSON, ""} {
		t.Run(string(f), func(t *testing.T) {
			srv, run := startServer(t, ServerOptions{})
			w := &waits{}
			dest := &HTTPDestination{URL: run.URL(), Format: f, Wait: w.wait}
			want := sampleBatch(f != JSON)
			if err := dest.Send(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			got := srv.Batches()
			if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
				t.Fatalf("server holds\n%#v\nwant\n%#v", got, want)
			}
			if len(w.got()) != 0 {
				t.Fatalf("waited %v", w.got())
			}
			// Batches returns copies.
			got[0].Records[0]["user"] = "changed"
			if srv.Batches()[0].Records[0]["user"] != want.Records[0]["user"] {
				t.Fatal("Batches exposes the server's records")
			}
		})
	}
}

func TestConcurrentSends(t *testing.T) {
	srv, run := startServer(t, ServerOptions{})
	dest := &HTTPDestination{URL: run.URL(), Wait: (&waits{}).wait}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			b := Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"i": int64(i)}}}
			if err := dest.Send(t.Context(), b); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, b := range srv.Batches() {
		seen[b.Records[0]["i"].(int64)] = true
	}
	if len(seen) != 8 {
		t.Fatalf("received %v", seen)
	}
}

// flaky answers with the scripted statuses first, then passes to next.
type flaky struct {
	script   []int
	header   http.Header
	next     http.Handler
	attempts atomic.Int32
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(f.attempts.Add(1))
	if n <= len(f.script) {
		for k, v := range f.header {
			w.Header()[k] = v
		}
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "scripted", f.script[n-1])
		return
	}
	f.next.ServeHTTP(w, r)
}

func TestRetriesThenSucceeds(t *testing.T) {
	srv, _ := NewServer(ServerOptions{})
	h := &flaky{script: []int{503, 502, 500}, next: srv}
	ts := httptest.NewServer(h)
	defer ts.Close()

	w := &waits{}
	dest := &HTTPDestination{
		URL:     ts.URL,
		Wait:    w.wait,
		Backoff: Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond, Rand: func() float64 { return 0.5 }},
	}
	b := sampleBatch(true)
	if err := dest.Send(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if n := h.attempts.Load(); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
	// d = 100, 200, 300 (capped); the wait is d/2 + 0.5*d/2.
	want := []time.Duration{75 * time.Millisecond, 150 * time.Millisecond, 225 * time.Millisecond}
	if got := w.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	if got := srv.Batches(); len(got) != 1 || !reflect.DeepEqual(got[0], b) {
		t.Fatalf("server holds %v", got)
	}
}

func TestRetryAfter(t *testing.T) {
	srv, _ := NewServer(ServerOptions{})
	h := &flaky{script: []int{429}, header: http.Header{"Retry-After": {"7"}}, next: srv}
	ts := httptest.NewServer(h)
	defer ts.Close()
	w := &waits{}
	dest := &HTTPDestination{URL: ts.URL, Wait: w.wait, Backoff: Backoff{Initial: time.Millisecond, Max: 5 * time.Second}}
	if err := dest.Send(t.Context(), sampleBatch(true)); err != nil {
		t.Fatal(err)
	}
	if got := w.got(); !reflect.DeepEqual(got, []time.Duration{5 * time.Second}) {
		t.Fatalf("waits %v, want Retry-After capped at Max", got)
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404, 413, 415} {
		h := &flaky{script: []int{code, code, code}, next: http.NotFoundHandler()}
		ts := httptest.NewServer(h)
		w := &waits{}
		dest := &HTTPDestination{URL: ts.URL, Wait: w.wait}
		err := dest.Send(t.Context(), sampleBatch(true))
		ts.Close()
		var se *StatusError
		if !errors.Is(err, ErrRejected) || !errors.As(err, &se) || se.Code != code {
			t.Fatalf("%d: error %v", code, err)
		}
		if n := h.attempts.Load(); n != 1 || len(w.got()) != 0 {
			t.Fatalf("%d: %d attempts, waits %v", code, n, w.got())
		}
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/in", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	dest := &HTTPDestination{URL: ts.URL + "/in", Wait: (&waits{}).wait}
	if err := dest.Send(t.Context(), sampleBatch(true)); !errors.Is(err, ErrRejected) {
		t.Fatalf("redirect: %v", err)
	}
	if elsewhere.Load() != 0 {
		t.Fatal("the batch followed the redirect")
	}
}

func TestGivesUp(t *testing.T) {
	h := &flaky{script: []int{500, 500, 500, 500}, next: http.NotFoundHandler()}
	ts := httptest.NewServer(h)
	defer ts.Close()
	w := &waits{}
	dest := &HTTPDestination{URL: ts.URL, Wait: w.wait, Backoff: Backoff{MaxAttempts: 3}}
	err := dest.Send(t.Context(), sampleBatch(true))
	var se *StatusError
	if !errors.Is(err, ErrGaveUp) || !errors.As(err, &se) || se.Code != 500 {
		t.Fatalf("error %v", err)
	}
	if h.attempts.Load() != 3 || len(w.got()) != 2 {
		t.Fatalf("%d attempts, %d waits", h.attempts.Load(), len(w.got()))
	}
}

func TestNetworkErrorsAreRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	w := &waits{}
	dest := &HTTPDestination{URL: "http://" + addr + "/", Wait: w.wait, Backoff: Backoff{MaxAttempts: 4}}
	if err := dest.Send(t.Context(), sampleBatch(true)); !errors.Is(err, ErrGaveUp) {
		t.Fatalf("error %v", err)
	}
	if len(w.got()) != 3 {
		t.Fatalf("waits %v", w.got())
	}
}

func TestContextEndsTheRetries(t *testing.T) {
	h := &flaky{script: []int{503, 503, 503}, next: http.NotFoundHandler()}
	ts := httptest.NewServer(h)
	defer ts.Close()
	ctx, cancel := context.WithCancel(t.Context())
	dest := &HTTPDestination{URL: ts.URL, Wait: func(ctx context.Context, d time.Duration) error {
		cancel() // the caller gives up while we wait
		return ctx.Err()
	}}
	err := dest.Send(ctx, sampleBatch(true))
	if !errors.Is(err, context.Canceled) || h.attempts.Load() != 1 {
		t.Fatalf("error %v after %d attempts", err, h.attempts.Load())
	}
	// Cancelled before the first attempt: nothing is sent.
	if err := dest.Send(ctx, sampleBatch(true)); !errors.Is(err, context.Canceled) || h.attempts.Load() != 1 {
		t.Fatalf("error %v after %d attempts", err, h.attempts.Load())
	}
}

func TestTimerWait(t *testing.T) {
	// A deadline sooner than the wait: fail at once instead of sleeping
	// past it.
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	if err := timerWait(ctx, 2*time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the deadline: %v", err)
	}
	cancelled, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if err := timerWait(cancelled, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if err := timerWait(t.Context(), 0); err != nil {
		t.Fatalf("zero wait: %v", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second, Rand: func() float64 { return 0 }}
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, b.delay(n))
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	b.Rand = func() float64 { return 0.999999 }
	if d := b.delay(1); d <= 999*time.Millisecond || d > time.Second {
		t.Fatalf("top of the jitter: %v", d)
	}
	huge := Backoff{Initial: math.MaxInt64 / 3, Max: math.MaxInt64, Rand: func() float64 { return 0 }}
	if d := huge.delay(10); d != math.MaxInt64/2 {
		t.Fatalf("overflow: %v", d)
	}
	if d := (Backoff{Rand: func() float64 { return 0 }}).delay(1); d != DefaultInitial/2 {
		t.Fatalf("default: %v", d)
	}
}

func TestSendRefuses(t *testing.T) {
	h := &flaky{next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })}
	ts := httptest.NewServer(h)
	defer ts.Close()
	ok := sampleBatch(true)
	tests := []struct {
		name string
		dest HTTPDestination
		b    Batch
		want error
	}{
		{"http to a remote host", HTTPDestination{URL: "http://collector.example.com/"}, ok, ErrBadDestination},
		{"other scheme", HTTPDestination{URL: "ftp://127.0.0.1/"}, ok, ErrBadDestination},
		{"no host", HTTPDestination{URL: "https:///x"}, ok, ErrBadDestination},
		{"bad url", HTTPDestination{URL: "http://[::1"}, ok, ErrBadDestination},
		{"bad format", HTTPDestination{URL: ts.URL, Format: "xml"}, ok, ErrBadDestination},
		{"timestamp", HTTPDestination{URL: ts.URL}, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"t": time.Unix(0, 0)}}}, ErrBadBatch},
		{"NaN", HTTPDestination{URL: ts.URL}, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"x": math.NaN()}}}, ErrBadBatch},
		{"struct", HTTPDestination{URL: ts.URL}, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"x": struct{}{}}}}, ErrBadBatch},
		{"huge uint", HTTPDestination{URL: ts.URL}, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"x": uint64(math.MaxUint64)}}}, ErrBadBatch},
		{"null record", HTTPDestination{URL: ts.URL}, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{nil}}, ErrBadBatch},
		{"no purpose", HTTPDestination{URL: ts.URL}, Batch{Collection: "c", Records: ok.Records}, ErrBadBatch},
		{"too deep", HTTPDestination{URL: ts.URL}, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"x": nest(MaxDepth)}}}, ErrBadBatch},
		{"too large", HTTPDestination{URL: ts.URL, MaxBody: 64}, ok, ErrTooLarge},
		{"no records", HTTPDestination{URL: ts.URL}, Batch{Purpose: "p", Collection: "c"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.dest.Wait = (&waits{}).wait
			if err := tt.dest.Send(t.Context(), tt.b); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	if n := h.attempts.Load(); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
	// At the depth limit it is fine.
	d := HTTPDestination{URL: ts.URL}
	if err := d.Send(t.Context(), Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"x": nest(MaxDepth - 1)}}}); err != nil {
		t.Fatal(err)
	}
}

// nest returns a value whose innermost element is at depth n+1 below a
// record field.
func nest(n int) any {
	var v any = "leaf"
	for range n {
		v = []any{v}
	}
	return v
}

func post(t *testing.T, url, ct string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(msg)
}

// onlyReader hides the length of a body, so it is sent chunked.
type onlyReader struct{ io.Reader }

func TestServerRejects(t *testing.T) {
	srv, run := startServer(t, ServerOptions{MaxBody: 1024})
	good, err := encodeBatch(CBOR, sampleBatch(true))
	if err != nil {
		t.Fatal(err)
	}
	goodJSON, err := encodeBatch(JSON, sampleBatch(false))
	if err != nil {
		t.Fatal(err)
	}
	big := Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"x": strings.Repeat("y", 2000)}}}
	bigBody, err := encodeBatch(CBOR, big)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ct   string
		body io.Reader
		want int
	}{
		{"garbage cbor", ContentTypeCBOR, strings.NewReader("\xff\x00garbage"), 400},
		{"garbage json", ContentTypeJSON, strings.NewReader("{not json"), 400},
		{"empty body", ContentTypeCBOR, strings.NewReader(""), 400},
		{"cbor as json", ContentTypeJSON, bytes.NewReader(good), 400},
		{"trailing bytes", ContentTypeCBOR, bytes.NewReader(append(append([]byte{}, good...), 0x00)), 400},
		{"trailing json", ContentTypeJSON, strings.NewReader(string(goodJSON) + " {}"), 400},
		{"unknown field", ContentTypeJSON, strings.NewReader(`{"purpose":"p","collection":"c","records":[],"extra":1}`), 400},
		{"null record", ContentTypeJSON, strings.NewReader(`{"purpose":"p","collection":"c","records":[null]}`), 400},
		{"no purpose", ContentTypeJSON, strings.NewReader(`{"collection":"c","records":[]}`), 400},
		{"json too deep", ContentTypeJSON, strings.NewReader(`{"purpose":"p","collection":"c","records":[{"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}]}`), 400},
		{"json huge number", ContentTypeJSON, strings.NewReader(`{"purpose":"p","collection":"c","records":[{"x":1e999}]}`), 400},
		{"too large", ContentTypeCBOR, bytes.NewReader(bigBody), 413},
		{"too large, chunked", ContentTypeCBOR, onlyReader{bytes.NewReader(bigBody)}, 413},
		{"text/plain", "text/plain", bytes.NewReader(good), 415},
		{"no content type", "", bytes.NewReader(good), 415},
		{"bad content type", "application/", bytes.NewReader(good), 415},
		{"cbor with params", ContentTypeCBOR + "; charset=binary", bytes.NewReader(good), 204},
		{"json", ContentTypeJSON, bytes.NewReader(goodJSON), 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, msg := post(t, run.URL(), tt.ct, tt.body); code != tt.want {
				t.Fatalf("status %d (%s), want %d", code, msg, tt.want)
			}
		})
	}
	if n := len(srv.Batches()); n != 2 {
		t.Fatalf("%d batches held, want the 2 good ones", n)
	}
	resp, err := http.Get(run.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
}

// Hand-made CBOR the decoder must refuse.
func TestDecodeRejectsCBOR(t *testing.T) {
	head := func(records string) []byte {
		// {"purpose": "p", "collection": "c", "records": <records>}
		return []byte("\xa3\x67purpose\x61p\x6acollection\x61c\x67records" + records)
	}
	tests := map[string][]byte{
		"indefinite array":    head("\x9f\xff"),
		"tag on a time":       head("\x81\xa1\x61t\xc1\x1a\x00\x00\x00\x00"),
		"duplicate key":       head("\x81\xa2\x61a\x01\x61a\x02"),
		"integer key":         head("\x81\xa1\x01\x02"),
		"uint beyond int64":   head("\x81\xa1\x61x\x1b\xff\xff\xff\xff\xff\xff\xff\xff"),
		"NaN":                 head("\x81\xa1\x61x\xf9\x7e\x00"),
		"infinity":            head("\x81\xa1\x61x\xf9\x7c\x00"),
		"simple value":        head("\x81\xa1\x61x\xf0"),
		"invalid UTF-8":       head("\x81\xa1\x61x\x61\xff"),
		"array claims 2^32":   head("\x9a\xff\xff\xff\xff"),
		"records not array":   head("\x01"),
		"record not map":      head("\x81\x01"),
		"case-folded key":     []byte("\xa3\x67PURPOSE\x61p\x6acollection\x61c\x67records\x80"),
		"batch is an array":   []byte("\x83\x61p\x61c\x80"),
		"truncated":           head("\x81\xa1\x61x"),
		"empty purpose":       []byte("\xa3\x67purpose\x60\x6acollection\x61c\x67records\x80"),
		"nested deeper than":  head("\x81\xa1\x61x" + strings.Repeat("\x81", MaxDepth+1) + "\x01"),
		"byte string key map": head("\x81\xa1\x41x\x01"),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if b, err := decodeBatch(CBOR, data); !errors.Is(err, ErrBadBatch) {
				t.Fatalf("decoded %v, %v", b, err)
			}
		})
	}
	// The header itself is right: with a valid records value it decodes.
	b, err := decodeBatch(CBOR, head("\x81\xa1\x61x\x01"))
	if err != nil || !reflect.DeepEqual(b, Batch{Purpose: "p", Collection: "c", Records: []map[string]any{{"x": int64(1)}}}) {
		t.Fatalf("valid: %v %v", b, err)
	}
}

func TestServerFull(t *testing.T) {
	srv, run := startServer(t, ServerOptions{MaxBatches: 1})
	w := &waits{}
	dest := &HTTPDestination{URL: run.URL(), Wait: w.wait, Backoff: Backoff{MaxAttempts: 2, Max: time.Minute}}
	if err := dest.Send(t.Context(), sampleBatch(true)); err != nil {
		t.Fatal(err)
	}
	err := dest.Send(t.Context(), sampleBatch(true))
	var se *StatusError
	if !errors.Is(err, ErrGaveUp) || !errors.As(err, &se) || se.Code != 503 || se.RetryAfter != time.Minute {
		t.Fatalf("full: %v", err)
	}
	if len(srv.Batches()) != 1 || !reflect.DeepEqual(w.got(), []time.Duration{time.Minute}) {
		t.Fatalf("batches %d, waits %v", len(srv.Batches()), w.got())
	}
}

func TestNewServerOptions(t *testing.T) {
	if _, err := NewServer(ServerOptions{MaxBody: -1}); !errors.Is(err, ErrBadOptions) {
		t.Fatal(err)
	}
	if _, err := NewServer(ServerOptions{MaxBatches: -1}); !errors.Is(err, ErrBadOptions) {
		t.Fatal(err)
	}
}

func TestStartStopsOnContext(t *testing.T) {
	srv, err := NewServer(ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	run, err := srv.Start(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := post(t, run.URL(), ContentTypeJSON, strings.NewReader(`{"purpose":"p","collection":"c","records":[]}`)); code != 204 {
		t.Fatalf("status %d", code)
	}
	cancel()
	if err := run.Close(); err != nil { // waits for the shutdown the cancel began
		t.Fatal(err)
	}
	if err := run.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", run.Addr()); err == nil {
		c.Close()
		t.Fatal("still listening after Close")
	}
	if _, err := srv.Start(t.Context(), "256.0.0.1:0"); err == nil {
		t.Fatal("listening on a bad address")
	}
}
