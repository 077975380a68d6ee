// Package relay is a zero-knowledge store-and-forward relay for ferry
// spaces: devices of one user that are never online together exchange
// opaque payloads through it. The relay stores sealed, padded, signed
// bundles per space until every member has acknowledged them; it never
// holds a space key and cannot read, forge or silently alter what it
// stores. It can lose or withhold data, and clients detect what it
// tampered with or dropped.
//
// Pieces:
//
//   - Space: a random 32-byte key held by member devices; the relay knows
//     only its derived ID. Invite and AcceptInvitation carry a space to a
//     new device, encrypted with age to the device's X25519 recipient
//     (DeriveInviteIdentity, NewInviteIdentity).
//   - Seal and Open: end-to-end bundles, XChaCha20-Poly1305 under a key
//     derived from the space key, padded to power-of-two size buckets from
//     1 KiB to 4 MiB, and signed by the sender's Ed25519 identity.
//   - Server: the relay, an http.Handler over NATS JetStream (a NATS
//     server embedded in the process, or the streams of a NATS cluster
//     with any number of stateless front-ends), with signed requests,
//     membership, long-poll pulls, acknowledgements, compaction and
//     quotas. Start serves it on an address, with TLS.
//   - Client: signed requests with retries and backoff; Sender pushes a
//     device's payloads with persisted counters; Verifier opens pulled
//     bundles and yields each sender's payloads in order, exactly once,
//     reporting ErrTampered and ErrMissing.
//
// # Usage
//
//	srv, err := relay.NewServer(dir, relay.ServerOptions{Logger: logger})
//	serving, err := srv.Start(ctx, ":7443", tlsConfig)
//
//	c := &relay.Client{URL: url, Identity: deviceKey}
//	space, err := relay.NewSpace(url)
//	err = c.CreateSpace(ctx, space)
//	_, err = c.UpdateMembers(ctx, space, []ed25519.PublicKey{otherDevice}, nil)
//
//	out, err := relay.NewSender(ctx, c, space, kv)
//	seq, err := out.Send(ctx, payload) // ErrQuota: keep payload, retry later
//
//	in, err := relay.NewVerifier(ctx, space, kv, relay.VerifierOptions{Self: devicePub})
//	n, err := in.Receive(ctx, c, 30*time.Second, func(m relay.Message) error {
//		return apply(m.Payload) // durably; then it is confirmed
//	})
//
// See docs/relay.md for the threat model, formats and failure modes.
package relay
