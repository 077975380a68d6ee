package relay_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log"
	"net/http/httptest"
	"os"

	"github.com/ferrysync/ferry/relay"
)

// Two devices share a space through a relay they never reach at the same
// time. The relay stores only sealed, padded bundles.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "relay-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := relay.NewServer(dir, relay.ServerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()

	// The laptop creates the space and invites the phone.
	_, laptopKey, _ := ed25519.GenerateKey(nil)
	_, phoneKey, _ := ed25519.GenerateKey(nil)
	laptop := &relay.Client{URL: ts.URL, Identity: laptopKey}
	phone := &relay.Client{URL: ts.URL, Identity: phoneKey}

	space, err := relay.NewSpace(ts.URL)
	if err != nil {
		log.Fatal(err)
	}
	if err := laptop.CreateSpace(ctx, space); err != nil {
		log.Fatal(err)
	}
	if _, err := laptop.UpdateMembers(ctx, space, []ed25519.PublicKey{phoneKey.Public().(ed25519.PublicKey)}, nil); err != nil {
		log.Fatal(err)
	}
	phoneID, _ := relay.DeriveInviteIdentity(phoneKey) // the phone shows its recipient as a QR code
	invitation, err := relay.Invite(space, phoneID.Recipient())
	if err != nil {
		log.Fatal(err)
	}

	// The laptop sends, then goes offline.
	out, _ := relay.NewSender(ctx, laptop, space, relay.NewMemKV())
	for _, p := range []string{"change 1", "change 2"} {
		if _, err := out.Send(ctx, []byte(p)); err != nil {
			log.Fatal(err)
		}
	}

	// Later, the phone opens the invitation and receives.
	inv, err := relay.AcceptInvitation(invitation, phoneID)
	if err != nil {
		log.Fatal(err)
	}
	v, _ := relay.NewVerifier(ctx, inv.Space, relay.NewMemKV(), relay.VerifierOptions{Self: phoneKey.Public().(ed25519.PublicKey)})
	n, err := v.Receive(ctx, phone, 0, func(m relay.Message) error {
		fmt.Printf("counter %d: %s\n", m.Counter, m.Payload)
		return nil
	})
	fmt.Println(n, err)
	// Output:
	// counter 1: change 1
	// counter 2: change 2
	// 2 <nil>
}
