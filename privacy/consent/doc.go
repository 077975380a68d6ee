// Package consent keeps the user's permissions for sharing data: grants
// that name a collection (optionally some of its fields), a purpose, a
// destination and an expiry; revocations, which always win; and a record of
// every share made under a grant. Everything goes into an append-only,
// hash-chained ledger that the user can list and export, so nothing leaves
// the device without a decision the user can see.
//
// # Usage
//
//	l, err := consent.Open(ctx, log, anchor, consent.Options{Now: clock})
//	g, err := l.Grant(ctx, consent.Grant{Collection: "notes", Purpose: "device-sync",
//		Destination: peerFingerprint})
//	if g, ok := l.Allowed(peerFingerprint, "notes", "device-sync"); ok { ... }
//	err = l.Revoke(ctx, g.ID, "lost phone")
package consent
