package transport_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/transport"
)

func ExampleListenTLS() {
	ctx := context.Background()
	// Each replica has an Ed25519 identity; in ferry it is kept in the store.
	serverKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	clientKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	serverPub := serverKey.Public().(ed25519.PublicKey)
	clientPub := clientKey.Public().(ed25519.PublicKey)

	// Each side pins the other's key (in practice, a fingerprint the user
	// compared out of band).
	ln, err := transport.ListenTLS(ctx, "127.0.0.1:0", serverKey, transport.NewPinSet(clientPub), transport.TLSOptions{})
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	d, err := transport.NewTLSDialer(clientKey, transport.NewPinSet(serverPub), transport.TLSOptions{})
	if err != nil {
		panic(err)
	}
	client, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		panic(err)
	}
	defer client.Close()
	server, err := ln.Accept(ctx)
	if err != nil {
		panic(err)
	}
	defer server.Close()

	if err := client.Send(ctx, []byte("hello")); err != nil {
		panic(err)
	}
	frame, err := server.Recv(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s from a peer pinned as %t\n", frame, transport.Fingerprint(server.RemoteIdentity()) == transport.Fingerprint(clientPub))
	// Output: hello from a peer pinned as true
}

func ExampleNewMemNetwork() {
	ctx := context.Background()
	pubA := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey)
	pubB := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32)).Public().(ed25519.PublicKey)

	// In a test, pass t.Log so a failure shows the seed and every fault.
	n := transport.NewMemNetwork(42, func(line string) { fmt.Println(line) })
	defer n.Close()
	ln, _ := n.Listen("b", pubB)

	// Script the next connection: a frame held for 2s, and a cut after 2 frames.
	_ = n.Script(transport.Plan{CutAfter: 2, Delay: map[int]time.Duration{2: 2 * time.Second}})
	a, _ := n.Dialer("a", pubA).Dial(ctx, "b")
	b, _ := ln.Accept(ctx)

	_ = a.Send(ctx, []byte("one"))
	_ = a.Send(ctx, []byte("two")) // held on the wire until the fake clock passes 2s
	n.Advance(2 * time.Second)
	err := a.Send(ctx, []byte("three"))
	fmt.Println("third send:", err)
	for {
		f, err := b.Recv(ctx)
		if err != nil {
			fmt.Println("recv:", err)
			break
		}
		fmt.Printf("recv %s\n", f)
	}
	// Output:
	// transport/mem: network seed=42
	// transport/mem: seed=42 conn a->b#0 frame 2 delayed 2s (plan)
	// transport/mem: seed=42 conn a->b#0 cut after 2 frames (plan, at frame 3); 0 frames lost in flight
	// third send: transport: connection cut (send on a->b#0)
	// recv one
	// recv two
	// recv: transport: connection cut (recv on a->b#0)
}
