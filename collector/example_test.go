package collector_test

import (
	"context"
	"fmt"

	"github.com/ferrysync/ferry/collector"
)

func Example() {
	ctx := context.Background()
	srv, err := collector.NewServer(collector.ServerOptions{})
	if err != nil {
		panic(err)
	}
	run, err := srv.Start(ctx, "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer run.Close()

	dest := &collector.HTTPDestination{URL: run.URL()} // CBOR by default
	err = dest.Send(ctx, collector.Batch{
		Purpose:    "fitness-stats",
		Collection: "workouts",
		Records: []map[string]any{
			{"user": "iqbxivv5y2wun37w", "age": "30-40", "steps": int64(8113)},
		},
	})
	if err != nil {
		panic(err)
	}
	for _, b := range srv.Batches() {
		fmt.Println(b.Purpose, b.Collection, b.Records)
	}
	// Output:
	// fitness-stats workouts [map[age:30-40 steps:8113 user:iqbxivv5y2wun37w]]
}
