package replica_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log"
	"os"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
	"github.com/ferrysync/ferry/transport"
)

// Two devices keep notes offline, then sync over TLS on loopback, each
// pinning the other's identity.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "ferry-example")
	defer os.RemoveAll(dir)

	open := func(name string) *replica.Replica {
		r, err := replica.Open(ctx, dir+"/"+name, replica.Options{
			Passphrase: []byte("correct horse battery staple"),
			KDF:        storage.TestKDF(), // use the default (strong) KDF in real use
			Name:       name,
		})
		if err != nil {
			log.Fatal(err)
		}
		return r
	}
	laptop, phone := open("laptop"), open("phone")
	defer laptop.Close()
	defer phone.Close()

	// Offline edits on both devices.
	laptop.Put(ctx, "notes", "groceries", map[string]any{"title": "Groceries", "items": []any{"milk"}})
	phone.Put(ctx, "notes", "todo", map[string]any{"title": "Call Ann"})
	laptop.Update(ctx, "notes", "groceries", func(d *crdt.Doc) error {
		return d.ListAppend("items", "eggs")
	})

	// Pairing: each device grants the other device-sync for "notes".
	if _, err := laptop.Pair(ctx, phone.ID(), []string{"notes"}, 0); err != nil {
		log.Fatal(err)
	}
	if _, err := phone.Pair(ctx, laptop.ID(), []string{"notes"}, 0); err != nil {
		log.Fatal(err)
	}

	// The phone serves; the laptop dials. Each pins the other's key.
	pubOf := func(r *replica.Replica) ed25519.PublicKey { return r.Identity().Public().(ed25519.PublicKey) }
	l, err := transport.ListenTLS(ctx, "127.0.0.1:0", phone.Identity(), transport.NewPinSet(pubOf(laptop)), transport.TLSOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept(ctx)
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		_, err = phone.Sync(ctx, conn)
		served <- err
	}()
	conn, err := transport.DialTLS(ctx, l.Addr(), laptop.Identity(), transport.NewPinSet(pubOf(phone)), transport.TLSOptions{})
	if err != nil {
		log.Fatal(err)
	}
	stats, err := laptop.Sync(ctx, conn)
	conn.Close()
	if err != nil || <-served != nil {
		log.Fatal(err)
	}
	fmt.Println("sent", stats.RecordsSent, "received", stats.RecordsReceived)

	todo, _ := laptop.Get(ctx, "notes", "todo")
	groceries, _ := phone.Get(ctx, "notes", "groceries")
	fmt.Println(todo["title"], groceries["items"])
	// Output:
	// sent 1 received 1
	// Call Ann [milk eggs]
}
