package collector

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors.
var (
	// ErrBadBatch: a batch is malformed, or holds a value a batch may not
	// hold.
	ErrBadBatch = errors.New("collector: bad batch")
	// ErrTooLarge: an encoded batch exceeds the size limit.
	ErrTooLarge = errors.New("collector: batch too large")
	// ErrRejected: the collector refused the batch for good (a 4xx other
	// than 429, or a redirect); sending it again will not help.
	ErrRejected = errors.New("collector: batch rejected")
	// ErrGaveUp: every attempt failed with a retryable error.
	ErrGaveUp = errors.New("collector: gave up")
	// ErrBadDestination: the destination is misconfigured.
	ErrBadDestination = errors.New("collector: bad destination")
	// ErrBadOptions: server options are invalid.
	ErrBadOptions = errors.New("collector: bad options")
)

// Destination receives one-way shares.
type Destination interface {
	Send(ctx context.Context, batch Batch) error
}

var (
	_ Destination  = (*HTTPDestination)(nil)
	_ http.Handler = (*Server)(nil)
)

// StatusError is an HTTP response other than 2xx. Permanent ones are
// wrapped together with ErrRejected.
type StatusError struct {
	Code       int
	RetryAfter time.Duration // from a Retry-After header in seconds, or 0
	Body       string        // the first bytes of the response body
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("collector: HTTP %d", e.Code)
	}
	return fmt.Sprintf("collector: HTTP %d: %s", e.Code, e.Body)
}

// Backoff paces retries: the wait before attempt n+1 is drawn uniformly
// from [d/2, d] with d = Initial * 2^(n-1), capped at Max (equal jitter).
// A Retry-After from the collector lengthens a wait, up to Max.
type Backoff struct {
	Initial     time.Duration // default 500ms
	Max         time.Duration // default 30s
	MaxAttempts int           // attempts in all, including the first; default 5
	// Rand returns a number in [0, 1) for the jitter; default math/rand/v2.
	Rand func() float64
}

// Defaults of Backoff.
const (
	DefaultInitial     = 500 * time.Millisecond
	DefaultMax         = 30 * time.Second
	DefaultMaxAttempts = 5
)

// delay is the wait after failed attempt n (n >= 1).
func (b Backoff) delay(n int) time.Duration {
	d, maxWait := b.Initial, b.maxWait()
	if d <= 0 {
		d = DefaultInitial
	}
	for i := 1; i < n && d < maxWait; i++ {
		if d > maxWait/2 {
			d = maxWait
			break
		}
		d *= 2
	}
	d = min(d, maxWait)
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}

func (b Backoff) maxWait() time.Duration {
	if b.Max <= 0 {
		return DefaultMax
	}
	return b.Max
}

func (b Backoff) attempts() int {
	if b.MaxAttempts <= 0 {
		return DefaultMaxAttempts
	}
	return b.MaxAttempts
}

// HTTPDestination POSTs each batch to URL.
//
// It retries network errors, 429 and 5xx responses with Backoff, and stops
// at once on any other 4xx (ErrRejected), on a redirect (never followed: a
// share goes only where its grant says), on a certificate error and when
// ctx ends. The URL must be https, or http to a loopback host.
type HTTPDestination struct {
	URL string
	// Client sends the requests (http.DefaultClient if nil); its redirect
	// policy is overridden to follow none.
	Client *http.Client
	// Format of the body: CBOR (the default) or JSON.
	Format Format
	// Header is added to every request (e.g. an authorization token).
	Header  http.Header
	Backoff Backoff
	// MaxBody bounds the encoded batch (DefaultMaxBody if 0); a larger one
	// is ErrTooLarge and is not sent.
	MaxBody int
	// Wait blocks for d or until ctx ends, returning ctx's error then. The
	// default uses a timer and fails at once, without waiting, when ctx's
	// deadline comes before d is over. Tests inject their own.
	Wait func(ctx context.Context, d time.Duration) error
}

// Send encodes batch and POSTs it until it is accepted, a permanent error
// occurs, the attempts run out (ErrGaveUp) or ctx ends. A batch without
// records is not sent.
func (d *HTTPDestination) Send(ctx context.Context, batch Batch) error {
	u, err := url.Parse(d.URL)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadDestination, err)
	}
	if err := checkURL(u); err != nil {
		return err
	}
	ct, ok := d.Format.contentType()
	if !ok {
		return fmt.Errorf("%w: format %q", ErrBadDestination, d.Format)
	}
	body, err := encodeBatch(d.Format, batch)
	if err != nil {
		return err
	}
	if len(batch.Records) == 0 {
		return nil
	}
	limit := d.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	if len(body) > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), limit)
	}

	client := http.DefaultClient
	if d.Client != nil {
		client = d.Client
	}
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	wait := d.Wait
	if wait == nil {
		wait = timerWait
	}

	attempts := d.Backoff.attempts()
	for n := 1; ; n++ {
		retry, after, err := d.attempt(ctx, &noRedirect, u.String(), ct, body)
		if err == nil {
			return nil
		}
		if !retry {
			return err
		}
		if n >= attempts {
			return fmt.Errorf("%w after %d attempts: %w", ErrGaveUp, n, err)
		}
		delay := d.Backoff.delay(n)
		if after > delay {
			delay = min(after, d.Backoff.maxWait())
		}
		if werr := wait(ctx, delay); werr != nil {
			return fmt.Errorf("%w (last error: %w)", werr, err)
		}
	}
}

// attempt POSTs once. retry reports whether the error is worth another
// attempt; after is the collector's Retry-After.
func (d *HTTPDestination) attempt(ctx context.Context, c *http.Client, u, ct string, body []byte) (retry bool, after time.Duration, err error) {
	if err := ctx.Err(); err != nil {
		return false, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return false, 0, fmt.Errorf("%w: %w", ErrBadDestination, err)
	}
	for k, vs := range d.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", ct)
	resp, err := c.Do(req)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return false, 0, cerr
		}
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return false, 0, fmt.Errorf("%w: %w", ErrRejected, err)
		}
		return true, 0, err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
		resp.Body.Close()
	}()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, 0, nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	se := &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(msg))}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		se.RetryAfter = time.Duration(s) * time.Second
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return true, se.RetryAfter, se
	}
	return false, 0, fmt.Errorf("%w: %w", ErrRejected, se)
}

// checkURL allows https anywhere and http to loopback hosts only.
func checkURL(u *url.URL) error {
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%w: plain http to non-loopback host %q", ErrBadDestination, host)
		}
	default:
		return fmt.Errorf("%w: scheme %q (want https)", ErrBadDestination, u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("%w: no host in %q", ErrBadDestination, u.Redacted())
	}
	return nil
}

// timerWait waits d on a timer, or fails at once when ctx's deadline is
// sooner.
func timerWait(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return fmt.Errorf("next attempt in %v is past the deadline: %w", d, context.DeadlineExceeded)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
