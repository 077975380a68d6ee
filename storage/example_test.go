package storage_test

import (
	"context"
	"fmt"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/storage"
)

func ExampleCreate() {
	ctx := context.Background()
	// A real store lives in a directory and uses DefaultKDF(); this example
	// runs in memory with the cheap test preset.
	st, err := storage.Create(ctx, "", storage.Options{
		Passphrase: []byte("correct horse battery staple"),
		KDF:        storage.TestKDF(),
		InMemory:   true,
	})
	if err != nil {
		panic(err)
	}
	defer st.Close()

	doc := automerge.New()
	doc.Path("title").Set("Buy milk")
	doc.Commit("create")
	metas, err := st.Write(ctx, storage.Batch{
		Records: []storage.RecordWrite{{
			Collection: "todos", ID: "t1",
			Changes:  doc.SaveIncremental(),
			Snapshot: func() ([]byte, error) { return doc.Save(), nil },
		}},
		// A sync cursor committed atomically with the record.
		Slots: []storage.SlotWrite{{Namespace: "cursors", Key: "peer-a", Value: []byte("42")}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("seq", metas[0].Seq)

	data, meta, err := st.Load(ctx, "todos", "t1")
	if err != nil {
		panic(err)
	}
	loaded, err := automerge.Load(data)
	if err != nil {
		panic(err)
	}
	title, _ := loaded.Path("title").Get()
	fmt.Println(meta.Collection, meta.ID, title.Str())
	// Output:
	// seq 1
	// todos t1 Buy milk
}
