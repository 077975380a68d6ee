package main

import (
	"testing"
	"time"
)

// TestSoakShort runs the soak for a few seconds with three replicas, so
// `make test` keeps the program working; `make soak` is the real run.
func TestSoakShort(t *testing.T) {
	seed := time.Now().UnixNano()
	d := 3 * time.Second
	if testing.Short() {
		d = time.Second
	}
	st, err := Run(Config{Duration: d, Replicas: 3, Workers: 2, Seed: seed, Log: t.Logf})
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	if st.Sessions.Load() == 0 || st.Markers.Load() == 0 {
		t.Fatalf("seed %d: the soak did nothing", seed)
	}
}
