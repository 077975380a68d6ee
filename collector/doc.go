// Package collector carries one-way shares (anonymized batches, see
// privacy/anon) to outside destinations, and provides a small collector
// server that receives them.
//
// A Destination takes a Batch: the purpose, the collection and fresh
// anonymized records. HTTPDestination POSTs it as CBOR (core deterministic
// encoding) or JSON, retries network errors, 429 and 5xx with exponential
// backoff and jitter up to a number of attempts, treats other 4xx as
// permanent (ErrRejected), never follows redirects, and refuses plain http
// to anything but a loopback host. The wait between attempts is a field, so
// tests run without sleeping.
//
// Server is an http.Handler that decodes batches with bounded decoders
// (body size, nesting, element counts, no tags, no indefinite lengths, no
// duplicate keys) and holds them in memory; Start serves it on a TCP
// address until Close.
//
// # Usage
//
//	srv, _ := collector.NewServer(collector.ServerOptions{})
//	run, _ := srv.Start(ctx, "127.0.0.1:0")
//	defer run.Close()
//
//	dest := &collector.HTTPDestination{URL: run.URL()}
//	err := dest.Send(ctx, collector.Batch{Purpose: "fitness-stats", Collection: "workouts", Records: res.Records})
//	got := srv.Batches()
//
// See docs/privacy-anon.md for what a share contains.
package collector
