package benchmarks

import (
	"context"
	"testing"
)

// The sync benchmarks: two on-disk replicas (SyncWrites on, the default)
// sync over loopback TCP with TLS 1.3. Each runs, in the same process and
// over the same kind of connection, the baseline: the raw Automerge sync
// protocol (automerge-go SyncState) document by document, every
// document's messages of a round pipelined over one connection. The
// baseline keeps its documents in memory and persists nothing, so its
// times are a lower bound for an application built on it.
//
// ns/op is ferry's session alone (setup, dial and the baseline are not
// timed); the metrics give both sides:
//
//	ferry-s, raw-s       seconds of the sync (both sides done)
//	time-ratio           ferry-s / raw-s
//	*-B/rec, *-B/chg     frame payload bytes, both directions, per record
//	                     (per changed record for the delta)
//	ferry-frames-a2b/b2a frames each way, a round-trip proxy
//	raw-frames, raw-rounds  the baseline's frames (both directions) and
//	                     rounds (one round trip each)
//
// FERRY_BENCH_N sets the number of records (10,000 by default).

// BenchmarkSyncInitial10k: a holds N records of ~210 bytes of JSON-like
// content, b none; one sync moves them all.
func BenchmarkSyncInitial10k(b *testing.B) {
	n := syncBenchN(b)
	res := syncResults{}
	b.StopTimer()
	for range b.N {
		ra, rb := newSyncReplicas(b, n)
		fw, sa, sb := ferrySync(b, ra, rb, true)
		if sa.RecordsSent != n || sb.RecordsSent != 0 {
			b.Fatalf("initial sync sent %d/%d records, want %d/0", sa.RecordsSent, sb.RecordsSent, n)
		}
		checkFerryRecord(b, rb, n/2, int64(n/2%1000))

		pa, pb := newRawPair(b, n)
		rw := rawSync(b, pa, pb, allIdx(n))
		checkRawConverged(b, pa, pb)

		res.add("ferry-s", fw.dur.Seconds())
		res.add("raw-s", rw.dur.Seconds())
		res.add("time-ratio", fw.dur.Seconds()/rw.dur.Seconds())
		res.add("ferry-rec/s", float64(n)/fw.dur.Seconds())
		res.add("raw-rec/s", float64(n)/rw.dur.Seconds())
		res.add("ferry-B/rec", fw.bytes()/float64(n))
		res.add("raw-B/rec", rw.bytes()/float64(n))
		res.add("bytes-ratio", fw.bytes()/rw.bytes())
		res.add("ferry-frames-a2b", float64(fw.framesSent))
		res.add("ferry-frames-b2a", float64(fw.framesRec))
		res.add("raw-frames", rw.frames())
		res.add("raw-rounds", float64(rw.rounds))
		b.Logf("n=%d ferry %v %d B %d+%d frames | raw %v %d B %d frames %d rounds",
			n, fw.dur, fw.bytesSent+fw.bytesRecv, fw.framesSent, fw.framesRec,
			rw.dur, rw.bytesSent+rw.bytesRecv, rw.framesSent+rw.framesRec, rw.rounds)
	}
	res["content-B/rec"] = syncJSONSize(n) * float64(b.N)
	res.report(b)
}

// BenchmarkSyncDelta10of10k: after the initial sync, a changes 10 of its N
// records (one field each); one sync. The baseline resumes every
// document's persisted sync state and runs over all N documents (raw
// Automerge has no change feed to tell it which changed); "oracle" runs it
// over the 10 changed documents only.
func BenchmarkSyncDelta10of10k(b *testing.B) {
	n := syncBenchN(b)
	changed := syncChanged(n)
	k := float64(len(changed))
	res := syncResults{}
	b.StopTimer()
	ctx := context.Background()
	for range b.N {
		ra, rb := newSyncReplicas(b, n)
		ferrySync(b, ra, rb, false)
		for _, i := range changed {
			if err := ra.Put(ctx, syncColl, syncID(i), map[string]any{"qty": syncChangedQty(i)}); err != nil {
				b.Fatal(err)
			}
		}
		fw, sa, sb := ferrySync(b, ra, rb, true)
		if sa.RecordsSent != len(changed) || sb.RecordsSent != 0 {
			b.Fatalf("delta sync sent %d/%d records, want %d/0", sa.RecordsSent, sb.RecordsSent, len(changed))
		}
		checkFerryRecord(b, rb, changed[9], syncChangedQty(changed[9]))

		pa, pb := newRawPair(b, n)
		rawSync(b, pa, pb, allIdx(n))
		for _, i := range changed {
			pa.change(b, i)
		}
		pa.persist()
		pb.persist()
		rw := rawSync(b, pa, pb, allIdx(n))
		checkRawConverged(b, pa, pb)

		qa, qb := newRawPair(b, n)
		rawSync(b, qa, qb, allIdx(n))
		for _, i := range changed {
			qa.change(b, i)
		}
		qa.persist()
		qb.persist()
		ow := rawSync(b, qa, qb, changed)
		checkRawConverged(b, qa, qb)

		res.add("ferry-s", fw.dur.Seconds())
		res.add("raw-s", rw.dur.Seconds())
		res.add("oracle-s", ow.dur.Seconds())
		res.add("time-ratio", fw.dur.Seconds()/rw.dur.Seconds())
		res.add("oracle-time-ratio", fw.dur.Seconds()/ow.dur.Seconds())
		res.add("ferry-B/chg", fw.bytes()/k)
		res.add("raw-B/chg", rw.bytes()/k)
		res.add("oracle-B/chg", ow.bytes()/k)
		res.add("bytes-ratio", fw.bytes()/rw.bytes())
		res.add("oracle-bytes-ratio", fw.bytes()/ow.bytes())
		res.add("ferry-frames-a2b", float64(fw.framesSent))
		res.add("ferry-frames-b2a", float64(fw.framesRec))
		res.add("raw-frames", rw.frames())
		res.add("raw-rounds", float64(rw.rounds))
		res.add("oracle-frames", ow.frames())
		b.Logf("n=%d changed=%d ferry %v %d B %d+%d frames | raw %v %d B %d frames %d rounds | oracle %v %d B %d frames %d rounds",
			n, len(changed), fw.dur, fw.bytesSent+fw.bytesRecv, fw.framesSent, fw.framesRec,
			rw.dur, rw.bytesSent+rw.bytesRecv, rw.framesSent+rw.framesRec, rw.rounds,
			ow.dur, ow.bytesSent+ow.bytesRecv, ow.framesSent+ow.framesRec, ow.rounds)
	}
	res.report(b)
}

// BenchmarkSyncIdle10k: a resync of N records already in sync. The
// baseline resumes the persisted sync states of all N documents.
func BenchmarkSyncIdle10k(b *testing.B) {
	n := syncBenchN(b)
	res := syncResults{}
	b.StopTimer()
	for range b.N {
		ra, rb := newSyncReplicas(b, n)
		ferrySync(b, ra, rb, false)
		fw, sa, sb := ferrySync(b, ra, rb, true)
		if sa.RecordsSent+sb.RecordsSent != 0 {
			b.Fatalf("idle sync sent %d/%d records", sa.RecordsSent, sb.RecordsSent)
		}

		pa, pb := newRawPair(b, n)
		rawSync(b, pa, pb, allIdx(n))
		pa.persist()
		pb.persist()
		rw := rawSync(b, pa, pb, allIdx(n))
		checkRawConverged(b, pa, pb)

		res.add("ferry-s", fw.dur.Seconds())
		res.add("raw-s", rw.dur.Seconds())
		res.add("time-ratio", fw.dur.Seconds()/rw.dur.Seconds())
		res.add("ferry-B", fw.bytes())
		res.add("raw-B", rw.bytes())
		res.add("ferry-frames-a2b", float64(fw.framesSent))
		res.add("ferry-frames-b2a", float64(fw.framesRec))
		res.add("raw-frames", rw.frames())
		res.add("raw-rounds", float64(rw.rounds))
		b.Logf("n=%d ferry %v %d B %d+%d frames | raw %v %d B %d frames %d rounds",
			n, fw.dur, fw.bytesSent+fw.bytesRecv, fw.framesSent, fw.framesRec,
			rw.dur, rw.bytesSent+rw.bytesRecv, rw.framesSent+rw.framesRec, rw.rounds)
	}
	res.report(b)
}

// checkFerryRecord fails unless r holds record i with the given qty.
func checkFerryRecord(b *testing.B, r interface {
	Get(ctx context.Context, collection, id string) (map[string]any, error)
}, i int, qty int64) {
	b.Helper()
	got, err := r.Get(context.Background(), syncColl, syncID(i))
	if err != nil {
		b.Fatal(err)
	}
	if got["qty"] != qty {
		b.Fatalf("record %d: qty %v, want %d", i, got["qty"], qty)
	}
}
