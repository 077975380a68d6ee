package replica

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// coreSide is one side of a scripted session: a core, the model host its
// requests run against, and the name the script knows it by.
type coreSide struct {
	name string
	host *reconModel
	core *syncCore
	err  error
	done bool
}

// coreConv runs sessions between cores with a deterministic scheduler: no
// goroutines, frames delivered in the order they were sent, every request
// performed at once against the side's host. It writes what happens as a
// conversation.
type coreConv struct {
	out     *strings.Builder
	verbose bool
	// inject, when set, replaces the first side's frame at injectAt
	// (counted from 1) with these bytes.
	injectAt int
	inject   []byte
	cfg      sessionConfig
}

type convFrame struct {
	from, to *coreSide
	b        []byte
}

// session runs a session between a and b to its end (or until nothing
// moves) and returns both sides' stats.
func (cv *coreConv) session(a, b *coreSide) (SyncStats, SyncStats) {
	ctx := context.Background()
	for _, s := range []*coreSide{a, b} {
		peer := b
		if s == b {
			peer = a
		}
		mine, err := s.host.hello(ctx, peer.host.name)
		if err != nil {
			panic(err)
		}
		mine.Nonce = []byte(fmt.Sprintf("nonce-of-%s-16b", s.name))[:reconNonceLen]
		s.core = newSyncCore(cv.cfg, peer.host.name, mine)
		s.err, s.done = nil, false
	}
	var queue []convFrame
	sent := map[*coreSide]int{}
	drain := func(s, peer *coreSide) {
		for !s.done && s.core.HasReady() {
			rd := s.core.Ready()
			for _, recs := range rd.Acked {
				fmt.Fprintf(cv.out, "%s: %s now holds [%s]\n", s.name, peer.name, recNames(recs))
				_ = s.host.acked(ctx, peer.host.name, recs)
			}
			if rd.CursorMoved {
				fmt.Fprintf(cv.out, "%s: cursor for %s at %d\n", s.name, peer.name, rd.Cursor)
				_ = s.host.cursorMoved(ctx, peer.host.name, rd.Cursor)
			}
			for _, f := range rd.Frames {
				sent[s]++
				b := f.b
				if sent[s] == cv.injectAt && s == a {
					b = cv.inject
					fmt.Fprintf(cv.out, "%s -> %s: (hostile) %s\n", s.name, peer.name, describeBytes(b))
				} else {
					fmt.Fprintf(cv.out, "%s -> %s: %s\n", s.name, peer.name, describeWire(f.m))
				}
				queue = append(queue, convFrame{s, peer, b})
			}
			s.core.Advance()
			if rd.Finished {
				_ = s.host.finished(ctx, peer.host.name, rd.PeerApplied)
				fmt.Fprintf(cv.out, "%s: finished\n", s.name)
			}
			if rd.Done {
				s.done, s.err = true, rd.Err
				if rd.Err != nil {
					fmt.Fprintf(cv.out, "%s: failed: %v\n", s.name, rd.Err)
				}
				return
			}
			if rd.Req != nil {
				ev := (&session{host: s.host, peer: peer.host.name}).perform(ctx, rd.Req)
				if cv.verbose || rd.Req.kind == reqApply {
					fmt.Fprintf(cv.out, "%s: %s\n", s.name, describeReq(rd.Req, ev))
				}
				if err := s.core.Step(ev); err != nil {
					panic(err)
				}
			}
			if rd.WaitFeed && cv.verbose {
				fmt.Fprintf(cv.out, "%s: waits for its feed\n", s.name)
			}
		}
	}
	turn := func(s, peer *coreSide) {
		if s.done {
			return
		}
		if err := s.core.Step(coreEvent{kind: evTurn, lastSeq: s.host.lastSeq()}); err != nil {
			panic(err)
		}
		drain(s, peer)
	}
	turn(a, b)
	turn(b, a)
	for steps := 0; len(queue) > 0; steps++ {
		if steps > 10000 {
			fmt.Fprintf(cv.out, "the session does not end\n")
			break
		}
		f := queue[0]
		queue = queue[1:]
		if f.to.done {
			continue
		}
		if err := f.to.core.Step(coreEvent{kind: evFrame, frame: f.b}); err != nil {
			panic(err)
		}
		drain(f.to, f.from)
		turn(f.to, f.from)
	}
	for _, s := range []*coreSide{a, b} {
		if !s.done {
			fmt.Fprintf(cv.out, "%s: stalled\n", s.name)
		}
	}
	return a.core.Stats(), b.core.Stats()
}

func recNames(recs []recordChanges) string {
	var names []string
	for _, rc := range recs {
		n := rc.Collection + "/" + rc.ID
		switch {
		case rc.Partial:
			n += "(part)"
		case len(rc.Changes) == 0 && len(rc.Heads) == 0:
			n += "(none)"
		}
		names = append(names, n)
	}
	return strings.Join(names, " ")
}

func describeBytes(b []byte) string {
	m, err := decodeMsg(b)
	if err != nil {
		return fmt.Sprintf("%d bytes that do not decode", len(b))
	}
	return describeWire(m)
}

// describeWire is one frame in words.
func describeWire(m *wireMsg) string {
	switch m.T {
	case msgHello:
		h := m.Hello
		s := fmt.Sprintf("hello cursor=%d seq=%d gen=%d colls=%s", h.Cursor, h.Seq, h.Gen, strings.Join(h.Colls, ","))
		if h.Recon {
			s += " recon"
		}
		return s
	case msgBatch:
		return fmt.Sprintf("batch upTo=%d [%s]", m.Batch.UpTo, recNames(m.Batch.Records))
	case msgAck:
		s := fmt.Sprintf("ack applied=%d", m.Ack.Applied)
		if len(m.Ack.Need) > 0 {
			var ns []string
			for _, n := range m.Ack.Need {
				ns = append(ns, n.Collection+"/"+n.ID)
			}
			s += " need=[" + strings.Join(ns, " ") + "]"
		}
		if m.Ack.Asked > 0 {
			s += fmt.Sprintf(" asked=%d", m.Ack.Asked)
		}
		return s
	case msgIdle:
		return fmt.Sprintf("idle seq=%d applied=%d got=%d", m.Idle.Seq, m.Idle.Applied, m.Idle.Got)
	case msgRecon:
		return "recon " + describeFrame(m.Recon)
	case msgError:
		return fmt.Sprintf("error code=%d", m.Err.Code)
	}
	return fmt.Sprintf("type %d", m.T)
}

func describeReq(r *coreReq, ev coreEvent) string {
	switch r.kind {
	case reqApply:
		s := fmt.Sprintf("applies [%s] up to %d", recNames(r.batch.Records), r.batch.UpTo)
		if len(ev.needs) > 0 {
			s += fmt.Sprintf(", lacks the dependencies of %d", len(ev.needs))
		}
		return s
	case reqFeed:
		return fmt.Sprintf("reads its feed after %d: [%s] up to %d", r.after, recNames(ev.recs), ev.upTo)
	case reqFull:
		return fmt.Sprintf("reads %s/%s in full", r.need.Collection, r.need.ID)
	case reqReconBatch:
		return fmt.Sprintf("reads %d records reconciliation found missing: [%s]", ev.used, recNames(ev.recs))
	case reqAdmit:
		return fmt.Sprintf("admits the peer: feed from %d", ev.start)
	}
	return r.kind.String()
}

// TestCoreScripts runs sessions between cores over model hosts through the
// scripts in testdata/core, which read as conversations between peers:
//
//	put NAME              writes, one per line: coll/id element...
//	sync A B [verbose] [window=N] [batch=N]
//	                      a session between A and B; prints every frame,
//	                      apply and persisted fact (verbose: every request)
//	hostile A B frame=K   the same, with A's K-th frame replaced
//	                      (kinds: garbage, ack-beyond, second-hello,
//	                      recon-without, idle-backwards)
//	lose NAME coll/id     NAME's next apply of that record finds its
//	                      dependencies missing
//	copy NAME SNAP        keep a copy of NAME's store as SNAP
//	restore NAME SNAP     NAME's store becomes the copy SNAP
//	show NAME             NAME's records
func TestCoreScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/core", func(t *testing.T, path string) {
		hosts := map[string]*reconModel{}
		snaps := map[string]*reconModel{}
		get := func(name string) *reconModel {
			if hosts[name] == nil {
				hosts[name] = newReconModel(name)
			}
			return hosts[name]
		}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			arg := func(i int) string {
				if i >= len(d.CmdArgs) {
					d.Fatalf(t, "%s needs %d arguments", d.Cmd, i+1)
				}
				return d.CmdArgs[i].Key
			}
			switch d.Cmd {
			case "put":
				h := get(arg(0))
				for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
					f := strings.Fields(line)
					if len(f) < 2 {
						d.Fatalf(t, "bad record line %q", line)
					}
					h.write(f[0], f[1:]...)
				}
				return fmt.Sprintf("%s holds %d records, feed at %d", arg(0), len(h.records), h.seq)
			case "sync", "hostile":
				var out strings.Builder
				cv := &coreConv{out: &out}
				for _, a := range d.CmdArgs[2:] {
					switch a.Key {
					case "verbose":
						cv.verbose = true
					case "window":
						fmt.Sscan(a.Vals[0], &cv.cfg.window)
					case "batch":
						fmt.Sscan(a.Vals[0], &cv.cfg.maxRecords)
					case "frame":
						fmt.Sscan(a.Vals[0], &cv.injectAt)
					case "kind":
						cv.inject = hostileFrame(t, a.Vals[0])
					}
				}
				sa, sb := cv.session(&coreSide{name: arg(0), host: get(arg(0))}, &coreSide{name: arg(1), host: get(arg(1))})
				if d.Cmd == "sync" {
					fmt.Fprintf(&out, "records %s->%s %d, %s->%s %d; frames %d+%d; stats agree: %v",
						arg(0), arg(1), sa.RecordsSent, arg(1), arg(0), sb.RecordsSent, sa.FramesSent, sb.FramesSent,
						sa.RecordsSent == sb.RecordsReceived && sb.RecordsSent == sa.RecordsReceived &&
							sa.BytesSent == sb.BytesReceived && sb.BytesSent == sa.BytesReceived)
				}
				return strings.TrimSpace(out.String())
			case "lose":
				get(arg(0)).missing[arg(1)] = true
				return ""
			case "copy":
				snaps[arg(1)] = get(arg(0)).clone()
				return ""
			case "restore":
				hosts[arg(0)] = snaps[arg(1)].clone()
				return fmt.Sprintf("%s holds %d records, feed at %d", arg(0), len(hosts[arg(0)].records), hosts[arg(0)].seq)
			case "show":
				return get(arg(0)).names()
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}

// hostileFrame makes a frame ferry's protocol forbids.
func hostileFrame(t *testing.T, kind string) []byte {
	var m *wireMsg
	switch kind {
	case "garbage":
		return []byte{0, 0xff, 0x13, 0x37}
	case "ack-beyond":
		m = &wireMsg{T: msgAck, Ack: &ackMsg{Applied: 1 << 40}}
	case "second-hello":
		m = &wireMsg{T: msgHello, Hello: &helloMsg{Replica: "x", Policy: "p1"}}
	case "recon-without":
		m = &wireMsg{T: msgRecon, Recon: &reconMsg{Reply: true}}
	case "idle-backwards":
		m = &wireMsg{T: msgIdle, Idle: &idleMsg{Seq: 0, Applied: 1 << 40}}
	default:
		t.Fatalf("unknown hostile frame %s", kind)
	}
	b, err := encodeMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
