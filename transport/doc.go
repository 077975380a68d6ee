// Package transport moves frames between ferry replicas. It knows nothing of
// records: a frame is an opaque byte slice of at most a maximum size, sent
// and received whole, in order, over an authenticated connection.
//
// Three pieces:
//
//   - Framing over any byte stream: WriteFrame and ReadFrame (4-byte
//     big-endian length prefix, checked against the limit before anything is
//     allocated), and NewStreamConn, a context-aware Conn over a net.Conn.
//   - MemNetwork, an in-memory network of named endpoints for tests, with
//     faults (refuse, cut, drop, delay, partition) drawn from a logged seed or
//     scripted exactly with Plan, and a fake clock for delays.
//   - ListenTLS and TLSDialer: TCP with TLS 1.3 and mutual authentication by
//     each replica's Ed25519 identity, presented in a self-signed certificate
//     and trusted only if its Fingerprint is pinned (Pins). Unknown peers are
//     refused during the handshake, before any frame is read.
//
// Record wraps a Conn and keeps a copy of every frame that crossed it, for
// tests of what leaves a device; every Conn of the package reports Stats.
//
// # Usage
//
//	pins := transport.NewPinSet(peerPub)
//	ln, err := transport.ListenTLS(ctx, "127.0.0.1:7443", myKey, pins, transport.TLSOptions{})
//	...
//	conn, err := ln.Accept(ctx) // only peers in pins get here
//	frame, err := conn.Recv(ctx)
//
//	d, err := transport.NewTLSDialer(myKey, pins, transport.TLSOptions{})
//	conn, err := d.Dial(ctx, "127.0.0.1:7443")
//	err = conn.Send(ctx, []byte("hello"))
//
// In tests, the same code runs over memory:
//
//	n := transport.NewMemNetwork(seed, func(s string) { t.Log(s) })
//	n.SetFaults(transport.Faults{Cut: 0.01})
//	ln, _ := n.Listen("b", pubB)
//	conn, _ := n.Dialer("a", pubA).Dial(ctx, "b")
//
// See docs/transport.md for the design and its limits.
package transport
