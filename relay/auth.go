package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Request authentication. Every request carries four headers:
//
//	Ferry-Key        base64url (raw) of the 32-byte Ed25519 public key
//	Ferry-Time       Unix time in milliseconds, decimal
//	Ferry-Nonce      base64url (raw) of 16 random bytes
//	Ferry-Signature  base64url (raw) of the Ed25519 signature over:
//
//	"ferry-relay-request-v1\n" method "\n" escaped path "\n" raw query "\n"
//	hex(SHA-256(body)) "\n" time "\n" nonce
//
// The relay refuses a request whose time is outside the window around its
// clock, or earlier than its own start (nonces are remembered in memory
// only, so a restart must not reopen the window for replays), a nonce it
// has seen from that key within the window, or a bad signature.
const (
	hdrKey   = "Ferry-Key"
	hdrTime  = "Ferry-Time"
	hdrNonce = "Ferry-Nonce"
	hdrSig   = "Ferry-Signature"

	authLabel = "ferry-relay-request-v1"
	nonceSize = 16
)

var b64 = base64.RawURLEncoding

func requestMessage(method, path, query string, body []byte, ts, nonce string) []byte {
	h := sha256.Sum256(body)
	var b []byte
	b = append(b, authLabel...)
	for _, s := range []string{method, path, query, hex.EncodeToString(h[:]), ts, nonce} {
		b = append(b, '\n')
		b = append(b, s...)
	}
	return b
}

// signRequest sets the authentication headers of req, whose body is body.
func signRequest(req *http.Request, key ed25519.PrivateKey, body []byte, now time.Time) error {
	var n [nonceSize]byte
	if _, err := rand.Read(n[:]); err != nil {
		return err
	}
	nonce := b64.EncodeToString(n[:])
	ts := strconv.FormatInt(now.UnixMilli(), 10)
	msg := requestMessage(req.Method, req.URL.EscapedPath(), req.URL.RawQuery, body, ts, nonce)
	req.Header.Set(hdrKey, b64.EncodeToString(key.Public().(ed25519.PublicKey)))
	req.Header.Set(hdrTime, ts)
	req.Header.Set(hdrNonce, nonce)
	req.Header.Set(hdrSig, b64.EncodeToString(ed25519.Sign(key, msg)))
	return nil
}

// authHeaders are the parsed authentication headers.
type authHeaders struct {
	key   ed25519.PublicKey
	ts    int64
	tsRaw string
	nonce string
	sig   []byte
}

// parseAuth parses the headers without verifying anything.
func parseAuth(h http.Header) (authHeaders, bool) {
	var a authHeaders
	key, err := b64.DecodeString(h.Get(hdrKey))
	if err != nil || len(key) != ed25519.PublicKeySize {
		return a, false
	}
	a.tsRaw = h.Get(hdrTime)
	if len(a.tsRaw) == 0 || len(a.tsRaw) > 19 {
		return a, false
	}
	ts, err := strconv.ParseInt(a.tsRaw, 10, 64)
	if err != nil || ts < 0 || strconv.FormatInt(ts, 10) != a.tsRaw {
		return a, false
	}
	a.nonce = h.Get(hdrNonce)
	if n, err := b64.DecodeString(a.nonce); err != nil || len(n) != nonceSize {
		return a, false
	}
	sig, err := b64.DecodeString(h.Get(hdrSig))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return a, false
	}
	a.key, a.ts, a.sig = key, ts, sig
	return a, true
}

func (a authHeaders) verify(r *http.Request, body []byte) bool {
	return ed25519.Verify(a.key, requestMessage(r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body, a.tsRaw, a.nonce), a.sig)
}

// nonceCache remembers (key, nonce) pairs until their timestamp leaves the
// window. It is bounded: when full of unexpired entries it refuses.
type nonceCache struct {
	mu        sync.Mutex
	seen      map[[sha256.Size]byte]int64 // hash of key and nonce -> expiry (unix ms)
	max       int
	lastPrune int64
}

// add records the nonce; it returns false and full=false for a replay, and
// false and full=true if the cache is full.
func (c *nonceCache) add(key ed25519.PublicKey, nonce string, expiry, now int64) (ok, full bool) {
	k := sha256.Sum256(append(append([]byte(nil), key...), nonce...))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = make(map[[sha256.Size]byte]int64)
	}
	if exp, dup := c.seen[k]; dup && exp >= now {
		return false, false
	}
	if len(c.seen) >= c.max {
		c.prune(now)
		if len(c.seen) >= c.max {
			return false, true
		}
	} else if now-c.lastPrune > 60_000 {
		c.prune(now)
	}
	c.seen[k] = expiry
	return true, false
}

func (c *nonceCache) prune(now int64) {
	c.lastPrune = now
	for k, exp := range c.seen {
		if exp < now {
			delete(c.seen, k)
		}
	}
}
