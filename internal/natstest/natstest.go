// Package natstest starts NATS servers with JetStream inside the process,
// on loopback, for tests and benchmarks of the relay on a cluster.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is n NATS servers joined by routes, each with JetStream and
// its own store directory.
type Cluster struct {
	Nodes []*server.Server
	opts  []*server.Options
}

// StartCluster starts n nodes named n0.. on loopback (random ports) with
// cluster routes and waits until JetStream has a meta leader. The nodes
// are shut down when tb ends.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{}
	base := tb.TempDir()
	ports := freePorts(tb, n)
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	for i := range n {
		o := &server.Options{
			ServerName:             fmt.Sprintf("n%d", i),
			Host:                   "127.0.0.1",
			Port:                   server.RANDOM_PORT,
			JetStream:              true,
			StoreDir:               filepath.Join(base, fmt.Sprintf("n%d", i)),
			MaxPayload:             8 << 20,
			NoLog:                  true,
			NoSigs:                 true,
			DisableJetStreamBanner: true,
			Cluster: server.ClusterOpts{
				Name: "ferry",
				Host: "127.0.0.1",
				Port: ports[i],
			},
			Routes: routes,
		}
		ns, err := server.NewServer(o)
		if err != nil {
			tb.Fatal(err)
		}
		ns.Start()
		c.Nodes = append(c.Nodes, ns)
		c.opts = append(c.opts, o)
	}
	tb.Cleanup(c.Shutdown)
	for i, ns := range c.Nodes {
		if !ns.ReadyForConnections(30 * time.Second) {
			tb.Fatalf("nats node %d did not start", i)
		}
	}
	deadline := time.Now().Add(30 * time.Second) // a guard, not synchronisation
	for {
		ready, leader := 0, false
		for _, ns := range c.Nodes {
			if ns.NumRoutes() >= n-1 && ns.JetStreamIsCurrent() {
				ready++
			}
			leader = leader || len(ns.JetStreamClusterPeers()) == n // answered by the meta leader only
		}
		if ready == n && leader {
			return c
		}
		if time.Now().After(deadline) {
			for i, ns := range c.Nodes {
				tb.Logf("node %d: routes %d current %v peers %v", i, ns.NumRoutes(), ns.JetStreamIsCurrent(), ns.JetStreamClusterPeers())
			}
			tb.Fatal("nats cluster did not form")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URLs are the nodes' client URLs.
func (c *Cluster) URLs() []string {
	var out []string
	for _, ns := range c.Nodes {
		out = append(out, ns.ClientURL())
	}
	return out
}

// StoreDirs are the nodes' JetStream store directories.
func (c *Cluster) StoreDirs() []string {
	var out []string
	for _, o := range c.opts {
		out = append(out, o.StoreDir)
	}
	return out
}

// StreamLeader returns the index of the node leading stream (global
// account), or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, ns := range c.Nodes {
		if ns.Running() && ns.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// Stop shuts node i down and waits for it.
func (c *Cluster) Stop(i int) {
	c.Nodes[i].Shutdown()
	c.Nodes[i].WaitForShutdown()
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for _, ns := range c.Nodes {
		ns.Shutdown()
	}
	for _, ns := range c.Nodes {
		ns.WaitForShutdown()
	}
}

// freePorts finds n loopback ports free now (the OS may reuse them, which
// a test run survives: a node that cannot listen fails to start).
func freePorts(tb testing.TB, n int) []int {
	var out []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}
