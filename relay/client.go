package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client talks to a relay as one device. Set the exported fields before
// the first call and do not change them afterwards; a Client is safe for
// concurrent use.
//
// Every request is signed with Identity. Network errors and HTTP 5xx
// (except 507, a quota) are retried with exponential backoff and jitter;
// pushes are idempotent at the relay (the same bundle returns the same
// sequence number), so a retried push never stores a bundle twice.
type Client struct {
	// URL is the relay's base URL, e.g. "https://relay.example:7443".
	URL string
	// Identity is this device's Ed25519 key.
	Identity ed25519.PrivateKey
	// HTTP is the HTTP client (TLS settings, proxies, timeouts). Default
	// http.DefaultClient. Its Timeout, if any, must exceed pull waits.
	HTTP *http.Client
	// Retries is the number of retries after the first attempt. 0 means
	// 4; negative means none.
	Retries int
	// Backoff returns the pause before retry n (1-based). Default:
	// 100 ms doubling up to 5 s, with full jitter over its upper half.
	Backoff func(n int) time.Duration
	// Sleep pauses for d or until ctx ends. Tests inject one that does
	// not sleep. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock used for request timestamps. Default time.Now.
	Now func() time.Time
	// MaxPullBytes bounds one pull response. Default 8 MiB (the relay
	// returns at least one bundle whatever the bound).
	MaxPullBytes int

	mu   sync.Mutex
	skew time.Duration // relay clock minus ours, learned from a stale refusal
}

func (c *Client) now() time.Time {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return now().Add(c.skew)
}

func (c *Client) retries() int {
	switch {
	case c.Retries == 0:
		return 4
	case c.Retries < 0:
		return 0
	}
	return c.Retries
}

func (c *Client) pause(ctx context.Context, n int) error {
	var d time.Duration
	if c.Backoff != nil {
		d = c.Backoff(n)
	} else {
		d = min(100*time.Millisecond<<min(n-1, 10), 5*time.Second)
		d = d/2 + rand.N(d/2+1)
	}
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do sends one signed request (retrying as documented) and returns the
// body of a 2xx response, read up to limit bytes.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, limit int64) ([]byte, error) {
	if len(c.Identity) != ed25519.PrivateKeySize {
		return nil, invalidf("client identity has %d bytes", len(c.Identity))
	}
	base, err := url.Parse(c.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, invalidf("relay URL %q", c.URL)
	}
	u := base.JoinPath(path)
	u.RawQuery = query.Encode()
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	skewFixed := false
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if attempt > c.retries() {
				return nil, fmt.Errorf("%w: %s %s after %d attempts: %w", ErrUnavailable, method, c.URL, attempt, last)
			}
			if err := c.pause(ctx, attempt); err != nil {
				return nil, err
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
		if err != nil {
			return nil, invalidf("request: %s", err)
		}
		if len(body) > 0 {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		if err := signRequest(req, c.Identity, body, c.now()); err != nil {
			return nil, fmt.Errorf("relay: sign request: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			last = err
			continue
		}
		data, rerr := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			if rerr != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				last = rerr
				continue
			}
			if int64(len(data)) > limit {
				return nil, fmt.Errorf("%w: response larger than %d bytes from %s", ErrProtocol, limit, c.URL)
			}
			return data, nil
		}
		eb, derr := decodeError(data)
		if derr != nil || int64(len(data)) > limit {
			eb = errorBody{Error: http.StatusText(resp.StatusCode)}
		}
		if resp.StatusCode == http.StatusUnauthorized && eb.Code == codeStale && eb.Now > 0 && !skewFixed {
			skewFixed = true
			c.mu.Lock()
			now := time.Now
			if c.Now != nil {
				now = c.Now
			}
			c.skew = time.UnixMilli(eb.Now).Sub(now())
			c.mu.Unlock()
			attempt-- // not a failure of the relay
			continue
		}
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusInsufficientStorage {
			last = fmt.Errorf("HTTP %d: %s", resp.StatusCode, eb.Error)
			continue
		}
		return nil, c.statusError(resp.StatusCode, eb)
	}
}

func (c *Client) statusError(status int, eb errorBody) error {
	msg := strings.ToValidUTF8(eb.Error, "?")
	var sentinel error
	switch status {
	case http.StatusUnauthorized:
		sentinel = ErrAuth
	case http.StatusForbidden:
		if eb.Code == codeRemoved {
			return fmt.Errorf("%w: %w: %s (HTTP %d from %s)", ErrRemoved, ErrNotMember, msg, status, c.URL)
		}
		sentinel = ErrNotMember
	case http.StatusConflict:
		if eb.Code == codeCounter {
			return &CounterError{Expected: eb.Expected}
		}
		sentinel = ErrConflict
	case http.StatusRequestEntityTooLarge, http.StatusInsufficientStorage:
		sentinel = ErrQuota
	default:
		sentinel = ErrProtocol
	}
	return fmt.Errorf("%w: %s (HTTP %d from %s)", sentinel, msg, status, c.URL)
}

func spacePath(space Space, rest string) (string, error) {
	if err := space.check(); err != nil {
		return "", err
	}
	return "/v1/spaces/" + space.ID + rest, nil
}

// CreateSpace registers space with the relay, with this device as its only
// member (version 1 of the member list). Creating the same space again
// from the same device succeeds.
func (c *Client) CreateSpace(ctx context.Context, space Space) error {
	p, err := spacePath(space, "")
	if err != nil {
		return err
	}
	body, err := signMembers(Members{Space: space.ID, Version: 1, Keys: []ed25519.PublicKey{c.pub()}}, c.Identity)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPost, p, nil, body, maxSmallBody)
	return err
}

func (c *Client) pub() ed25519.PublicKey {
	if len(c.Identity) != ed25519.PrivateKeySize {
		return nil
	}
	return c.Identity.Public().(ed25519.PublicKey)
}

// Members returns the space's current member list as the relay holds it,
// with its signature checked.
func (c *Client) Members(ctx context.Context, space Space) (SignedMembers, error) {
	p, err := spacePath(space, "/members")
	if err != nil {
		return SignedMembers{}, err
	}
	b, err := c.do(ctx, http.MethodGet, p, nil, nil, maxMembersBody)
	if err != nil {
		return SignedMembers{}, err
	}
	sm, err := DecodeMembers(b)
	if err != nil {
		return SignedMembers{}, err
	}
	if sm.Space != space.ID {
		return SignedMembers{}, fmt.Errorf("%w: member list for another space from %s", ErrProtocol, c.URL)
	}
	return sm, nil
}

// UpdateMembers adds and removes members: it reads the current list,
// signs the next version and submits it, retrying a few times if another
// member updated the list at the same time. It returns the new list.
func (c *Client) UpdateMembers(ctx context.Context, space Space, add, remove []ed25519.PublicKey) (Members, error) {
	for _, k := range slices.Concat(add, remove) {
		if len(k) != ed25519.PublicKeySize {
			return Members{}, invalidf("member key of %d bytes", len(k))
		}
	}
	p, err := spacePath(space, "/members")
	if err != nil {
		return Members{}, err
	}
	for try := 0; ; try++ {
		cur, err := c.Members(ctx, space)
		if err != nil {
			return Members{}, err
		}
		next := Members{Space: space.ID, Version: cur.Version + 1}
		for _, k := range append(cur.Keys, add...) {
			if !slices.ContainsFunc(remove, func(r ed25519.PublicKey) bool { return r.Equal(k) }) {
				next.Keys = append(next.Keys, k)
			}
		}
		body, err := signMembers(next, c.Identity)
		if err != nil {
			return Members{}, err
		}
		_, err = c.do(ctx, http.MethodPut, p, nil, body, maxSmallBody)
		if errors.Is(err, ErrConflict) && try < 3 {
			continue
		}
		if err != nil {
			return Members{}, err
		}
		n, _ := next.normalize()
		return n, nil
	}
}

// Push stores a sealed bundle (from Seal) at the relay and returns its
// sequence number. Pushing the same bytes again returns the same number (or
// 0 if every member has acknowledged and the relay has compacted it). A
// full quota is ErrQuota: nothing was stored; keep the bundle and push it
// again later. A refused counter is a *CounterError.
func (c *Client) Push(ctx context.Context, space Space, sealed []byte) (uint64, error) {
	p, err := spacePath(space, "/bundles")
	if err != nil {
		return 0, err
	}
	if !isBucket(len(sealed)) {
		return 0, invalidf("not a sealed bundle (%d bytes)", len(sealed))
	}
	b, err := c.do(ctx, http.MethodPost, p, nil, sealed, maxSmallBody)
	if err != nil {
		var ce *CounterError
		if errors.As(err, &ce) && len(sealed) >= hdrLen {
			ce.Got = beUint64(sealed[1+ed25519.PublicKeySize:])
		}
		return 0, err
	}
	r, err := decodePush(b)
	if err != nil {
		return 0, err
	}
	return r.Seq, nil
}

func beUint64(b []byte) uint64 {
	var n uint64
	for _, c := range b[:8] {
		n = n<<8 | uint64(c)
	}
	return n
}

// Pull returns the bundles after seq after, in the relay's order. If there
// are none it waits up to wait (capped by the relay) for a push. Nothing
// in the envelopes is verified: give them to a Verifier.
func (c *Client) Pull(ctx context.Context, space Space, after uint64, wait time.Duration) ([]Envelope, error) {
	p, err := c.PullPage(ctx, space, after, wait)
	return p.Envelopes, err
}

// PullPage is Pull with the relay's head and low marks (Verifier.AddPage
// uses Low to start a new device where the relay's log starts).
func (c *Client) PullPage(ctx context.Context, space Space, after uint64, wait time.Duration) (Page, error) {
	p, err := spacePath(space, "/bundles")
	if err != nil {
		return Page{}, err
	}
	maxBytes := c.MaxPullBytes
	if maxBytes <= 0 {
		maxBytes = 8 << 20
	}
	q := url.Values{}
	q.Set("after", strconv.FormatUint(after, 10))
	q.Set("bytes", strconv.Itoa(maxBytes))
	if wait > 0 {
		q.Set("wait", strconv.FormatInt(wait.Milliseconds(), 10))
	}
	b, err := c.do(ctx, http.MethodGet, p, q, nil, int64(max(maxBytes, MaxBundleSize))+64<<10)
	if err != nil {
		return Page{}, err
	}
	page, err := decodePull(b)
	if err != nil {
		return Page{}, fmt.Errorf("%w (from %s)", err, c.URL)
	}
	return page, nil
}

// Ack tells the relay this device has applied everything up to seq. Once
// every member has acknowledged a bundle the relay deletes it.
func (c *Client) Ack(ctx context.Context, space Space, seq uint64) error {
	p, err := spacePath(space, "/ack")
	if err != nil {
		return err
	}
	q := url.Values{}
	q.Set("seq", strconv.FormatUint(seq, 10))
	_, err = c.do(ctx, http.MethodPost, p, q, nil, maxSmallBody)
	return err
}

// Status returns what the relay holds about the space.
func (c *Client) Status(ctx context.Context, space Space) (SpaceStatus, error) {
	p, err := spacePath(space, "/status")
	if err != nil {
		return SpaceStatus{}, err
	}
	b, err := c.do(ctx, http.MethodGet, p, nil, nil, maxSmallBody)
	if err != nil {
		return SpaceStatus{}, err
	}
	return decodeStatus(b)
}

// Epochs returns the space's signed key-epoch records, oldest first, as
// the relay holds them (check each with OpenEpochRecord).
func (c *Client) Epochs(ctx context.Context, space Space) ([][]byte, error) {
	p, err := spacePath(space, "/epochs")
	if err != nil {
		return nil, err
	}
	b, err := c.do(ctx, http.MethodGet, p, nil, nil, maxEpochsBody)
	if err != nil {
		return nil, err
	}
	return decodeEpochs(b)
}

// PutEpoch posts the space's next key-epoch record (from NewEpochRecord,
// signed by this device). A record whose epoch is not the next one is
// ErrConflict; the same record again succeeds.
func (c *Client) PutEpoch(ctx context.Context, space Space, record []byte) error {
	p, err := spacePath(space, "/epochs")
	if err != nil {
		return err
	}
	if len(record) > maxEpochRecord {
		return invalidf("key-epoch record of %d bytes", len(record))
	}
	_, err = c.do(ctx, http.MethodPost, p, nil, record, maxSmallBody)
	return err
}
