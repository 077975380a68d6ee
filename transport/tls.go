package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"syscall"
	"time"
)

// alpnProto names the protocol spoken inside TLS; both sides require it, so
// a TLS client of another protocol is refused during the handshake.
const alpnProto = "ferry/1"

// acceptFrame is the first frame a listener sends once the handshake (and
// its pin check) succeeded. In TLS 1.3 the client finishes its handshake
// before the server has checked the client's certificate, so without it a
// refused dialer would only learn of the refusal on its first Recv; with it,
// Dial returns ErrUnknownPeer instead. It costs one round trip per dial and
// is never returned to the application.
var acceptFrame = []byte("ferry-accept/1")

// Defaults of TLSOptions.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxHandshakes    = 64
)

// TLSOptions configure ListenTLS and the TLS dialer. The zero value is
// ready to use.
type TLSOptions struct {
	// MaxFrame is the largest frame accepted or sent; 0 means
	// DefaultMaxFrame.
	MaxFrame int
	// HandshakeTimeout bounds, per connection, the TCP connect (dialing
	// side), the TLS handshake, the pin check and the acceptance frame; 0
	// means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections a listener holds that are not yet
	// returned by Accept (handshaking, or waiting for Accept); when reached,
	// new TCP connections wait in the kernel backlog. 0 means
	// DefaultMaxHandshakes.
	MaxHandshakes int
	// Log, if not nil, receives one line per refused connection (listener)
	// and per transient accept error. It must be safe for concurrent use.
	Log func(string)
}

func (o TLSOptions) withDefaults() (TLSOptions, error) {
	if o.MaxFrame < 0 || o.HandshakeTimeout < 0 || o.MaxHandshakes < 0 {
		return o, errors.New("transport: TLSOptions: negative MaxFrame, HandshakeTimeout or MaxHandshakes")
	}
	o.MaxFrame = maxOrDefault(o.MaxFrame)
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxHandshakes == 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	return o, nil
}

// IdentityCertificate returns the self-signed X.509 certificate under which
// this package presents identity: the subject key is the identity's public
// key and the certificate is signed by it. It is deterministic (serial from
// the key's hash, fixed validity 2000..9999), because nothing but the key is
// checked: peers trust the key's fingerprint, not the certificate.
func IdentityCertificate(identity ed25519.PrivateKey) (tls.Certificate, error) {
	if len(identity) != ed25519.PrivateKeySize {
		return tls.Certificate{}, fmt.Errorf("transport: identity key has %d bytes, want %d", len(identity), ed25519.PrivateKeySize)
	}
	pub := identity.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	serial := new(big.Int).SetBytes(sum[:16])
	serial.Add(serial, big.NewInt(1)) // positive, never zero
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ferry " + Fingerprint(pub)},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, identity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: identity certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: identity certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: identity, Leaf: leaf}, nil
}

// peerIdentity checks the certificate a peer presented and returns its key.
// It runs as tls.Config.VerifyConnection on both sides, during the handshake:
// after the peer's Certificate message, before any application data.
//
// Possession of the private key is proven by TLS itself (the peer's
// CertificateVerify signature over the handshake transcript, checked against
// this certificate's key); this function decides whether that key is one we
// trust. Expiry, names and CAs are deliberately not checked: identities are
// pinned keys, certificates are regenerated at every start, and offline
// devices have unreliable clocks.
func peerIdentity(cs tls.ConnectionState, pins Pins) (ed25519.PublicKey, error) {
	if len(cs.PeerCertificates) != 1 {
		return nil, fmt.Errorf("%w: peer presented %d certificates, want exactly 1", ErrUnknownPeer, len(cs.PeerCertificates))
	}
	cert := cs.PeerCertificates[0]
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: peer key is %T, want Ed25519", ErrUnknownPeer, cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("%w: peer certificate not self-signed by its key: %w", ErrUnknownPeer, err)
	}
	if !pins.Allowed(pub) {
		return nil, fmt.Errorf("%w %s", ErrUnknownPeer, Fingerprint(pub))
	}
	return pub, nil
}

// tlsConfig builds the configuration of either side. InsecureSkipVerify
// (client) and RequireAnyClientCert (server) turn off only Go's CA-chain and
// host-name verification, which cannot apply to self-signed identities; the
// handshake still verifies the peer's signature with its certificate key, and
// VerifyConnection, which Go calls on both sides regardless of those
// settings, does the real check: the key must be pinned. Sessions are never
// resumed, so every connection proves its identity afresh.
func tlsConfig(cert tls.Certificate, pins Pins, server bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{alpnProto},
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := peerIdentity(cs, pins)
			return err
		},
	}
	if server {
		cfg.Certificates = []tls.Certificate{cert}
		cfg.ClientAuth = tls.RequireAnyClientCert
	} else {
		cfg.InsecureSkipVerify = true // see above: VerifyConnection pins the key
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		}
	}
	return cfg
}

// established checks the finished handshake and returns the peer key.
func established(tc *tls.Conn) (ed25519.PublicKey, error) {
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != alpnProto {
		return nil, fmt.Errorf("%w: ALPN %q, want %s", ErrNotFerry, cs.NegotiatedProtocol, alpnProto)
	}
	if cs.Version != tls.VersionTLS13 {
		return nil, fmt.Errorf("%w: negotiated TLS version %#x, want 1.3", ErrNotFerry, cs.Version)
	}
	if len(cs.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w: no peer certificate", ErrUnknownPeer)
	}
	pub, _ := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if pub == nil {
		return nil, fmt.Errorf("%w: peer key is not Ed25519", ErrUnknownPeer)
	}
	return pub, nil
}

// TLSListener accepts TLS 1.3 connections from pinned peers. Each TCP
// connection is handshaken in its own goroutine under HandshakeTimeout, so a
// slow or hostile client never delays others; a connection is returned by
// Accept only after its peer's key passed the pins and the acceptance frame
// was sent. Close stops every goroutine it started.
type TLSListener struct {
	ln     net.Listener
	cfg    *tls.Config
	opts   TLSOptions
	ready  chan *streamConn
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

var _ Listener = (*TLSListener)(nil)

// ListenTLS listens on the TCP address addr (use "127.0.0.1:0" for an
// ephemeral port) and accepts peers that present a certificate for a key
// pins allows, presenting identity's certificate in turn. ctx bounds only
// the creation of the listening socket; the listener lives until Close.
func ListenTLS(ctx context.Context, addr string, identity ed25519.PrivateKey, pins Pins, opts TLSOptions) (*TLSListener, error) {
	if pins == nil {
		return nil, errors.New("transport: ListenTLS: nil pins")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cert, err := IdentityCertificate(identity)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &TLSListener{
		ln:     ln,
		cfg:    tlsConfig(cert, pins, true),
		opts:   opts,
		ready:  make(chan *streamConn),
		sem:    make(chan struct{}, opts.MaxHandshakes),
		ctx:    lctx,
		cancel: cancel,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr returns the listening address (host:port).
func (l *TLSListener) Addr() string { return l.ln.Addr().String() }

// Accept returns the next authenticated connection.
func (l *TLSListener) Accept(ctx context.Context) (Conn, error) {
	if l.ctx.Err() != nil {
		return nil, fmt.Errorf("%w (accept)", ErrClosed)
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		return nil, fmt.Errorf("%w (accept)", ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("transport: accept: %w", ctx.Err())
	}
}

// Close stops listening, aborts handshakes in progress, closes connections
// not yet accepted, and waits for every goroutine of the listener.
// Connections already returned by Accept stay open.
func (l *TLSListener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.closeErr = err
		}
		l.wg.Wait()
	})
	return l.closeErr
}

func (l *TLSListener) logf(format string, args ...any) {
	l.opts.Log(fmt.Sprintf("transport/tls: "+format, args...))
}

func (l *TLSListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		select {
		case l.sem <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		nc, err := l.ln.Accept()
		if err != nil {
			<-l.sem
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (e.g. out of file descriptors): back off like net/http.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.logf("accept: %v; retrying in %v", err, backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		l.wg.Add(1)
		go l.serve(nc)
	}
}

func (l *TLSListener) serve(nc net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.sem }()
	c, err := l.handshake(nc)
	if err != nil {
		l.logf("refused %s: %v", nc.RemoteAddr(), err)
		_ = nc.Close()
		return
	}
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		_ = c.Close()
	}
}

func (l *TLSListener) handshake(nc net.Conn) (*streamConn, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.HandshakeTimeout)
	defer cancel()
	tc := tls.Server(nc, l.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	pub, err := established(tc)
	if err != nil {
		return nil, err
	}
	unbind := bindDeadline(ctx, tc.SetWriteDeadline)
	err = WriteFrame(tc, acceptFrame, 0)
	unbind()
	if err != nil {
		return nil, fmt.Errorf("sending acceptance: %w", err)
	}
	_ = tc.SetWriteDeadline(time.Time{})
	return newStreamConn(tc, pub, l.opts.MaxFrame), nil
}

// TLSDialer dials TLS listeners as one identity, trusting the servers pins
// allows. It is safe for concurrent use.
type TLSDialer struct {
	cfg  *tls.Config
	opts TLSOptions
}

var _ Dialer = (*TLSDialer)(nil)

// NewTLSDialer prepares a dialer presenting identity's certificate.
func NewTLSDialer(identity ed25519.PrivateKey, pins Pins, opts TLSOptions) (*TLSDialer, error) {
	if pins == nil {
		return nil, errors.New("transport: NewTLSDialer: nil pins")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cert, err := IdentityCertificate(identity)
	if err != nil {
		return nil, err
	}
	return &TLSDialer{cfg: tlsConfig(cert, pins, false), opts: opts}, nil
}

// DialTLS dials addr once; see TLSDialer.Dial.
func DialTLS(ctx context.Context, addr string, identity ed25519.PrivateKey, pins Pins, opts TLSOptions) (Conn, error) {
	d, err := NewTLSDialer(identity, pins, opts)
	if err != nil {
		return nil, err
	}
	return d.Dial(ctx, addr)
}

// Dial connects to addr, runs the TLS 1.3 handshake with mutual
// authentication and waits for the listener's acceptance. It returns an
// error wrapping ErrUnknownPeer when the server's key is not pinned (the
// client's own certificate is then never sent) or when the server refused
// ours, and ErrRefused when nothing listens at addr.
func (d *TLSDialer) Dial(ctx context.Context, addr string) (Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.HandshakeTimeout)
	defer cancel()
	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (dial %s: %w)", ErrRefused, addr, err)
		}
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	c, err := d.handshake(ctx, raw)
	if err != nil {
		_ = raw.Close()
		return nil, wrap(classifyHandshake(err), "dial "+addr)
	}
	return c, nil
}

// classifyHandshake wraps a failed dial handshake in the sentinel of its
// class: ErrClosed when the peer hung up (end of stream, reset, broken
// pipe), ErrNotFerry when it answered in another protocol. Errors that
// already carry a sentinel, and timeouts (net.Error), are left alone.
func classifyHandshake(err error) error {
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	var op *net.OpError
	switch {
	case errors.Is(err, ErrUnknownPeer), errors.Is(err, ErrNotFerry), errors.Is(err, ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case refusedByPeer(err):
		return fmt.Errorf("%w: the server refused our identity (%w)", ErrUnknownPeer, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w: the peer hung up during the handshake (%w)", ErrClosed, err)
	case errors.As(err, &rh), errors.As(err, &alert),
		errors.As(err, &op) && op.Op == "remote error":
		// Not TLS at all, or a TLS peer that refused ferry's ALPN protocol
		// or TLS 1.3 (a refusal of our identity was recognised earlier).
		return fmt.Errorf("%w (%w)", ErrNotFerry, err)
	}
	return err
}

func (d *TLSDialer) handshake(ctx context.Context, raw net.Conn) (*streamConn, error) {
	tc := tls.Client(raw, d.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	pub, err := established(tc)
	if err != nil {
		return nil, err
	}
	unbind := bindDeadline(ctx, tc.SetReadDeadline)
	frame, err := ReadFrame(tc, len(acceptFrame))
	unbind()
	if err != nil {
		if refusedByPeer(err) {
			return nil, fmt.Errorf("%w: the server refused our identity (%w)", ErrUnknownPeer, err)
		}
		if cerr := ctxErr(ctx, err); cerr != nil {
			return nil, fmt.Errorf("waiting for acceptance: %w", cerr)
		}
		return nil, fmt.Errorf("waiting for acceptance: %w", err)
	}
	if !bytes.Equal(frame, acceptFrame) {
		return nil, fmt.Errorf("%w: peer sent %q, want the %s acceptance", ErrNotFerry, frame, alpnProto)
	}
	_ = tc.SetReadDeadline(time.Time{})
	return newStreamConn(tc, pub, d.opts.MaxFrame), nil
}

// refusedByPeer reports whether err is a TLS alert by which the peer
// rejected our certificate.
func refusedByPeer(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	// The alert type inside is unexported; its text is AlertError's.
	msg := op.Err.Error()
	// bad_certificate, certificate_unknown, unknown_ca, access_denied,
	// decrypt_error (our CertificateVerify did not verify), certificate_required.
	for _, a := range []tls.AlertError{42, 46, 48, 49, 51, 116} {
		if msg == a.Error() {
			return true
		}
	}
	return false
}
