package benchmarks

import (
	"context"
	"testing"
	"time"

	"github.com/ferrysync/ferry/relay"
)

// BenchmarkRelay10k: replica a pushes N small records through an
// in-process relay on loopback HTTP; replica b, never connected to a,
// pulls and applies them. Reported: records per second for the push, the
// pull and both; the bytes the relay holds per record, against the
// records' plaintext JSON size (the relay stores sealed, padded, deflated
// bundles and nothing else).
// The relay stores in an embedded NATS JetStream server; the Badger store
// it replaced was measured side by side before its removal (docs/relay.md).
func BenchmarkRelay10k(b *testing.B) {
	benchRelay10k(b, relay.ServerOptions{})
}

func benchRelay10k(b *testing.B, opts relay.ServerOptions) {
	n := syncBenchN(b)
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		ra, rb := newSyncReplicas(b, n)
		srv, err := relay.NewServer(b.TempDir(), opts)
		if err != nil {
			b.Fatal(err)
		}
		run, err := srv.Start(ctx, "127.0.0.1:0", nil)
		if err != nil {
			b.Fatal(err)
		}
		space, err := ra.CreateSpace(ctx, run.URL(), []string{syncColl})
		if err != nil {
			b.Fatal(err)
		}
		code, err := rb.JoinCode()
		if err != nil {
			b.Fatal(err)
		}
		inv, err := ra.Invite(ctx, space.ID, code)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rb.JoinSpace(ctx, inv, []string{syncColl}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		push, err := ra.SyncRelay(ctx, space.ID)
		if err != nil {
			b.Fatal(err)
		}
		pushed := time.Since(start)
		b.StopTimer()
		status, err := (&relay.Client{URL: run.URL(), Identity: ra.Identity()}).Status(ctx, space)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start = time.Now()
		pull, err := rb.SyncRelay(ctx, space.ID)
		if err != nil {
			b.Fatal(err)
		}
		pulled := time.Since(start)
		b.StopTimer()
		if push.RecordsPushed != n || pull.RecordsApplied != n {
			b.Fatalf("pushed %d, applied %d of %d", push.RecordsPushed, pull.RecordsApplied, n)
		}
		perRec := float64(status.Bytes) / float64(n)
		plain := syncJSONSize(n)
		b.ReportMetric(float64(n)/pushed.Seconds(), "push-rec/s")
		b.ReportMetric(float64(n)/pulled.Seconds(), "pull-rec/s")
		b.ReportMetric(float64(n)/(pushed+pulled).Seconds(), "rec/s")
		b.ReportMetric(perRec, "relay-B/rec")
		b.ReportMetric(plain, "plain-B/rec")
		b.ReportMetric(perRec/plain, "relay/plain")
		b.ReportMetric(float64(push.BundlesPushed), "bundles")
		run.Close()
		srv.Close()
		b.StartTimer()
	}
}
