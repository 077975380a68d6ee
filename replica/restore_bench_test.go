package replica

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"filippo.io/age"
	"github.com/ferrysync/ferry/storage"
)

// BenchmarkRestore restores a backup of FERRY_BENCH_N records (default
// 10,000) into an empty replica ("fresh") and into the replica it came
// from ("over", every record unchanged). Run with -benchtime 1x.
func BenchmarkRestore(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	e := newEnv(b)
	src := e.replica("src")
	for i := range n {
		if err := src.Put(ctx, "items", fmt.Sprintf("r%06d", i), map[string]any{"title": "item " + strconv.Itoa(i), "qty": i}); err != nil {
			b.Fatal(err)
		}
	}
	key, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := src.Backup(ctx, &backup, storage.ExportOptions{Recipients: []age.Recipient{key.Recipient()}}); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d records, backup %d bytes", n, backup.Len())
	opts := storage.ImportOptions{Identities: []age.Identity{key}}
	b.Run("fresh", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dst := e.replica(fmt.Sprintf("dst%d", i))
			b.StartTimer()
			st, err := dst.Restore(ctx, bytes.NewReader(backup.Bytes()), opts)
			if err != nil || st.Created != n {
				b.Fatalf("%+v %v", st, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
	})
	b.Run("over", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			st, err := src.Restore(ctx, bytes.NewReader(backup.Bytes()), opts)
			if err != nil || st.Unchanged != n {
				b.Fatalf("%+v %v", st, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
	})
}
