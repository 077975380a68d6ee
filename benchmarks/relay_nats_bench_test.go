package benchmarks

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/internal/natstest"
	"github.com/ferrysync/ferry/relay"
)

const storeBenchBundles = 300

// BenchmarkRelayStore isolates the relay's store: one device pushes 300
// bundles of 4 KiB through HTTP on loopback (each acknowledged with
// fsync), another pulls them all and acknowledges (compaction). Reported:
// bundles per second each way (the Badger store it replaced was measured
// side by side before its removal: docs/relay.md).
func BenchmarkRelayStore(b *testing.B) {
	benchRelayStore(b, relay.ServerOptions{})
}

func benchRelayStore(b *testing.B, opts relay.ServerOptions) {
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		srv, err := relay.NewServer(b.TempDir(), opts)
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		a, c, space := benchSpace(b, ts.URL)
		sealed := make([][]byte, storeBenchBundles)
		for i := range sealed {
			if sealed[i], err = relay.Seal(space, a.Identity, uint64(i+1), make([]byte, 3000)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		for _, s := range sealed {
			if _, err := a.Push(ctx, space, s); err != nil {
				b.Fatal(err)
			}
		}
		pushed := time.Since(start)
		start = time.Now()
		n := 0
		for after := uint64(0); ; {
			page, err := c.PullPage(ctx, space, after, 0)
			if err != nil {
				b.Fatal(err)
			}
			if len(page.Envelopes) == 0 {
				break
			}
			n += len(page.Envelopes)
			after = page.Envelopes[len(page.Envelopes)-1].Seq
			if err := c.Ack(ctx, space, after); err != nil {
				b.Fatal(err)
			}
			if err := a.Ack(ctx, space, after); err != nil {
				b.Fatal(err)
			}
		}
		pulled := time.Since(start)
		b.StopTimer()
		if n != storeBenchBundles {
			b.Fatalf("pulled %d", n)
		}
		b.ReportMetric(storeBenchBundles/pushed.Seconds(), "push-bundles/s")
		b.ReportMetric(storeBenchBundles/pulled.Seconds(), "pull+ack-bundles/s")
		ts.Close()
		srv.Close()
		b.StartTimer()
	}
}

// benchSpace creates a space of two devices on the relay at url.
func benchSpace(b *testing.B, url string) (a, c *relay.Client, space relay.Space) {
	b.Helper()
	ctx := context.Background()
	_, ka, _ := ed25519.GenerateKey(rand.Reader)
	_, kc, _ := ed25519.GenerateKey(rand.Reader)
	a = &relay.Client{URL: url, Identity: ka}
	c = &relay.Client{URL: url, Identity: kc}
	space, err := relay.NewSpace(url)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.CreateSpace(ctx, space); err != nil {
		b.Fatal(err)
	}
	if _, err := a.UpdateMembers(ctx, space, []ed25519.PublicKey{kc.Public().(ed25519.PublicKey)}, nil); err != nil {
		b.Fatal(err)
	}
	return a, c, space
}

// BenchmarkRelayCluster: three NATS nodes in the process, two relay
// front-ends; 4 devices (each its own space) push 100 bundles of 4 KiB
// at once, alternating front-ends. Reported: aggregate pushes per second,
// and the time a push takes right after the bundle stream's leader node
// stops (time to resume).
func BenchmarkRelayCluster(b *testing.B) {
	const devices, per = 4, 100
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		cl := natstest.StartCluster(b, 3)
		var fes []*httptest.Server
		for range 2 {
			srv, err := relay.NewServer("", relay.ServerOptions{NATS: &relay.NATSOptions{URLs: cl.URLs()}, MaxSpacesPerKey: 100})
			if err != nil {
				b.Fatal(err)
			}
			ts := httptest.NewServer(srv)
			fes = append(fes, ts)
			defer srv.Close()
			defer ts.Close()
		}
		type dev struct {
			a      *relay.Client
			space  relay.Space
			sealed [][]byte
		}
		var ds []dev
		for i := range devices {
			a, _, space := benchSpace(b, fes[i%2].URL)
			d := dev{a: a, space: space}
			for j := range per + 1 {
				s, err := relay.Seal(space, a.Identity, uint64(j+1), make([]byte, 3000))
				if err != nil {
					b.Fatal(err)
				}
				d.sealed = append(d.sealed, s)
			}
			ds = append(ds, d)
		}
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, devices)
		for _, d := range ds {
			wg.Go(func() {
				for _, s := range d.sealed[:per] {
					if _, err := d.a.Push(ctx, d.space, s); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		leader := cl.StreamLeader("FERRY_BUNDLES")
		cl.Stop(leader)
		start = time.Now()
		if _, err := ds[0].a.Push(ctx, ds[0].space, ds[0].sealed[per]); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(devices*per)/elapsed.Seconds(), "push-bundles/s")
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "resume-ms")
		b.StartTimer()
	}
}

// BenchmarkRelayMemory: the heap of a relay (embedded NATS included, in
// this process) idle after start, and after 1,000 spaces have each been
// created, pushed to and pulled from.
func BenchmarkRelayMemory(b *testing.B) {
	const spaces = 1000
	ctx := context.Background()
	heap := func() float64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapInuse) / (1 << 20)
	}
	rss := func() float64 {
		b, err := os.ReadFile("/proc/self/statm")
		if err != nil {
			return 0
		}
		var size, res int64
		fmt.Sscan(string(b), &size, &res)
		return float64(res*int64(os.Getpagesize())) / (1 << 20)
	}
	for range b.N {
		base := heap()
		srv, err := relay.NewServer(b.TempDir(), relay.ServerOptions{NoSync: true, MaxSpacesPerKey: spaces})
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		idle := heap() - base
		idleRSS := rss()
		_, ka, _ := ed25519.GenerateKey(rand.Reader)
		a := &relay.Client{URL: ts.URL, Identity: ka}
		for i := range spaces {
			space, err := relay.NewSpace(ts.URL)
			if err != nil {
				b.Fatal(err)
			}
			if err := a.CreateSpace(ctx, space); err != nil {
				b.Fatal(fmt.Errorf("space %d: %w", i, err))
			}
			s, _ := relay.Seal(space, ka, 1, make([]byte, 500))
			if _, err := a.Push(ctx, space, s); err != nil {
				b.Fatal(err)
			}
			if _, err := a.PullPage(ctx, space, 0, 0); err != nil {
				b.Fatal(err)
			}
		}
		loaded := heap() - base
		b.ReportMetric(idle, "idle-heap-MiB")
		b.ReportMetric(loaded, "1000-spaces-heap-MiB")
		b.ReportMetric(idleRSS, "idle-RSS-MiB")
		b.ReportMetric(rss(), "1000-spaces-RSS-MiB")
		ts.Close()
		srv.Close()
	}
}
