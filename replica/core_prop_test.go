package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestCoreDeterministic: the same script of writes, losses, restores and
// sessions between model hosts, run twice from scratch, gives the same
// conversation byte for byte: every frame, apply, persisted fact and
// request in the same order (the core reads no clock and draws no random
// numbers). Every session ends, both sides count alike, and a final round
// of sessions leaves every host holding the same records.
func TestCoreDeterministic(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(2, 3).Draw(rt, "hosts")
		type op struct {
			kind          int
			a, b, rec     int
			window, batch int
		}
		ops := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) op {
			return op{
				kind:   rapid.IntRange(0, 5).Draw(t, "kind"),
				a:      rapid.IntRange(0, n-1).Draw(t, "a"),
				b:      rapid.IntRange(0, n-1).Draw(t, "b"),
				rec:    rapid.IntRange(0, 4).Draw(t, "rec"),
				window: rapid.IntRange(1, 3).Draw(t, "window"),
				batch:  rapid.IntRange(1, 3).Draw(t, "batch"),
			}
		}), 1, 25).Draw(rt, "ops")
		run := func() string {
			var out strings.Builder
			hosts := make([]*reconModel, n)
			snaps := make([]*reconModel, n)
			for i := range hosts {
				hosts[i] = newReconModel(fmt.Sprintf("h%d", i))
			}
			sync := func(i, j, window, batch int) {
				cv := &coreConv{out: &out, verbose: true, cfg: sessionConfig{window: window, maxRecords: batch}}
				sa, sb := cv.session(&coreSide{name: hosts[i].name[:4], host: hosts[i]}, &coreSide{name: hosts[j].name[:4], host: hosts[j]})
				if strings.Contains(out.String(), "stalled") || strings.Contains(out.String(), "does not end") {
					rt.Fatalf("a session did not end:\n%s", out.String())
				}
				if sa.RecordsSent != sb.RecordsReceived || sb.RecordsSent != sa.RecordsReceived ||
					sa.BytesSent != sb.BytesReceived || sb.BytesSent != sa.BytesReceived {
					rt.Fatalf("stats disagree: %+v / %+v", sa, sb)
				}
			}
			for s, o := range ops {
				switch o.kind {
				case 0, 1:
					hosts[o.a].write(fmt.Sprintf("notes/%d", o.rec), fmt.Sprintf("e%d", s))
				case 2:
					hosts[o.a].missing[fmt.Sprintf("notes/%d", o.rec)] = true
				case 3:
					snaps[o.a] = hosts[o.a].clone()
				case 4:
					if snaps[o.a] != nil {
						hosts[o.a] = snaps[o.a].clone()
					}
				case 5:
					if o.a != o.b {
						sync(o.a, o.b, o.window, o.batch)
					}
				}
			}
			for i := range hosts {
				for m := range hosts[i].missing {
					delete(hosts[i].missing, m)
				}
			}
			for range 2 {
				for i := 1; i < n; i++ {
					sync(0, i, 4, 512)
				}
			}
			for i := 1; i < n; i++ {
				if hosts[i].names() != hosts[0].names() {
					rt.Fatalf("host %d diverged:\n%s\n%s\n%s", i, hosts[i].names(), hosts[0].names(), out.String())
				}
			}
			return out.String()
		}
		first, second := run(), run()
		if first != second {
			rt.Fatalf("the same script gave two conversations:\n%s\n----\n%s", first, second)
		}
	})
}

// answer is a canned runner's answer to a request: what a host holding
// nothing would say (its feed ends at x%9 and holds nothing to send),
// with positions drawn from x.
func answer(r *coreReq, x uint64) coreEvent {
	switch r.kind {
	case reqAdmit:
		return coreEvent{kind: evAdmitted, start: x % 5, reconUpTo: x % 7, coversAll: x%2 == 0, lastSeq: x % 9}
	case reqReconStart, reqReconStep, reqReconExpand:
		return coreEvent{kind: evRecon}
	case reqFull:
		return coreEvent{kind: evRecords, recs: []recordChanges{{Collection: r.need.Collection, ID: r.need.ID}}}
	case reqReconBatch:
		return coreEvent{kind: evRecords, used: len(r.sends)}
	case reqFeed:
		// A feed that ends at x%9: one position per read, up to its end.
		end, upTo := x%9, r.after
		if upTo < end {
			upTo++
		}
		return coreEvent{kind: evRecords, upTo: upTo, lastSeq: end}
	case reqApply:
		return coreEvent{kind: evApplied, lastSeq: x % 11}
	}
	return coreEvent{kind: evFailed, err: errors.New("unknown request")}
}

// randomMsg is a message of any type with fields drawn from t, valid on
// the wire or not.
func randomMsg(t *rapid.T, peer string) *wireMsg {
	u := func(label string) uint64 { return rapid.Uint64Range(0, 12).Draw(t, label) }
	switch rapid.IntRange(0, 6).Draw(t, "type") {
	case 0:
		return &wireMsg{T: msgHello, Hello: &helloMsg{Replica: rapid.SampledFrom([]string{peer, "someone"}).Draw(t, "replica"),
			Policy: rapid.SampledFrom([]string{"p1", "p2"}).Draw(t, "policy"), Cursor: u("cursor"), Seq: u("seq"),
			Gen: u("gen"), Recon: rapid.Bool().Draw(t, "recon"), Colls: rapid.SliceOfN(rapid.SampledFrom([]string{"notes", "todo"}), 0, 2).Draw(t, "colls"),
			Nonce: make([]byte, reconNonceLen)}}
	case 1:
		var recs []recordChanges
		for i := range rapid.IntRange(0, 3).Draw(t, "records") {
			recs = append(recs, recordChanges{Collection: "notes", ID: fmt.Sprint(i), Changes: []byte("x"),
				Partial: rapid.Bool().Draw(t, "partial")})
		}
		return &wireMsg{T: msgBatch, Batch: &batchMsg{Records: recs, UpTo: u("upTo")}}
	case 2:
		var need []needMsg
		for i := range rapid.IntRange(0, 2).Draw(t, "needs") {
			need = append(need, needMsg{Collection: "notes", ID: fmt.Sprint(i)})
		}
		return &wireMsg{T: msgAck, Ack: &ackMsg{Applied: u("applied"), Asked: uint32(u("asked")), Need: need}}
	case 3:
		return &wireMsg{T: msgIdle, Idle: &idleMsg{Seq: u("seq"), Applied: u("applied"), Got: u("got")}}
	case 4:
		return &wireMsg{T: msgRecon, Recon: &reconMsg{Reply: rapid.Bool().Draw(t, "reply"),
			Ranges: []reconRange{{Lo: 0, Hi: 1024, Mode: rangeEmpty}}}}
	case 5:
		return &wireMsg{T: msgError, Err: &errMsg{Code: uint16(u("code")), Text: "no"}}
	}
	return &wireMsg{T: msgType(rapid.IntRange(0, 255).Draw(t, "tag"))}
}

// TestCoreNeverPanics: any order of events (frames of every type, valid
// or not, raw bytes, answers to requests made or not, failures) makes the
// core end the session with an error or go on; it never panics, a Step
// out of turn is refused with errCoreMisuse, and once over it stays over.
func TestCoreNeverPanics(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		peer := "peer-fingerprint"
		c := newSyncCore(sessionConfig{window: rapid.IntRange(1, 3).Draw(t, "window")}, peer,
			helloMsg{Replica: "me", Policy: "p1", Colls: []string{"notes"}, Nonce: make([]byte, reconNonceLen)})
		var req *coreReq
		for range rapid.IntRange(1, 60).Draw(t, "events") {
			if c.HasReady() {
				rd := c.Ready()
				c.Advance()
				if rd.Req != nil {
					req = rd.Req
				}
			}
			var ev coreEvent
			switch rapid.IntRange(0, 5).Draw(t, "event") {
			case 0, 1:
				m := randomMsg(t, peer)
				b, err := encodeMsg(m)
				if err != nil {
					continue
				}
				ev = coreEvent{kind: evFrame, frame: b}
			case 2:
				ev = coreEvent{kind: evFrame, frame: rapid.SliceOfN(rapid.Byte(), 0, 16).Draw(t, "bytes")}
			case 3:
				ev = coreEvent{kind: evTurn, lastSeq: rapid.Uint64Range(0, 12).Draw(t, "lastSeq")}
			case 4:
				if req != nil && rapid.Bool().Draw(t, "answer") {
					ev = answer(req, rapid.Uint64().Draw(t, "x"))
					req = nil
				} else {
					ev = coreEvent{kind: evKind(rapid.IntRange(1, 7).Draw(t, "kind"))}
				}
			case 5:
				ev = coreEvent{kind: evFailed, err: errors.New("the runner failed")}
			}
			wasDone := c.Done()
			err := c.Step(ev)
			if wasDone && err == nil {
				t.Fatalf("a core that was over took %s", ev.kind)
			}
			if err != nil && !errors.Is(err, errCoreMisuse) {
				t.Fatalf("Step: %v", err)
			}
			if wasDone && !c.Done() {
				t.Fatal("a core that was over began again")
			}
		}
	})
}

// FuzzCoreStep feeds a core frames from outside bytes after a valid
// hello: each input is a sequence of frames, each a 2-byte big-endian
// length and that many bytes; requests are answered as by a host holding
// nothing. The core must never panic, and must end the session on any
// frame that breaks the protocol.
func FuzzCoreStep(f *testing.F) {
	peer := "peer-fingerprint"
	hello := &wireMsg{T: msgHello, Hello: &helloMsg{Replica: peer, Policy: "p1", Colls: []string{"notes"}, Recon: true, Nonce: make([]byte, reconNonceLen)}}
	join := func(ms ...*wireMsg) []byte {
		var out []byte
		for _, m := range ms {
			b, _ := encodeMsg(m)
			out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
			out = append(out, b...)
		}
		return out
	}
	f.Add(join(hello, &wireMsg{T: msgIdle, Idle: &idleMsg{}}))
	f.Add(join(hello, &wireMsg{T: msgBatch, Batch: &batchMsg{Records: []recordChanges{{Collection: "notes", ID: "1", Changes: []byte("x")}}, UpTo: 3}},
		&wireMsg{T: msgAck, Ack: &ackMsg{Applied: 0, Need: []needMsg{{Collection: "notes", ID: "1"}}}}))
	f.Add(join(hello, &wireMsg{T: msgRecon, Recon: &reconMsg{Ranges: []reconRange{{Lo: 0, Hi: 1024, Mode: rangeEmpty}}}}))
	f.Add(join(hello, &wireMsg{T: msgError, Err: &errMsg{Code: errCodeProtocol, Text: "no"}}))
	f.Add([]byte{0, 3, 0, 0xff, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := newSyncCore(sessionConfig{}, peer, helloMsg{Replica: "me", Policy: "p1", Colls: []string{"notes"}, Nonce: make([]byte, reconNonceLen)})
		step := func(ev coreEvent) {
			if err := c.Step(ev); err != nil && !errors.Is(err, errCoreMisuse) {
				t.Fatalf("Step: %v", err)
			}
			for c.HasReady() {
				rd := c.Ready()
				c.Advance()
				if rd.Req != nil {
					if err := c.Step(answer(rd.Req, uint64(len(in)))); err != nil {
						t.Fatalf("answer: %v", err)
					}
				}
			}
		}
		for len(in) >= 2 && !c.Done() {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			if n > len(in) {
				n = len(in)
			}
			step(coreEvent{kind: evFrame, frame: in[:n]})
			in = in[n:]
			if !c.Done() {
				step(coreEvent{kind: evTurn, lastSeq: 2})
			}
		}
	})
}

// TestCoreWaitFeedReachesTheRunner: when a feed read shows nothing while
// the feed's end is ahead (a write still committing) and nothing else is
// to be done, the core's Ready says WaitFeed, and HasReady reports it, so
// the runner waits on the store's notification as well as on the peer.
// (With WaitFeed alone not counted, the runner never saw it and waited
// for the peer only: TestSessionFeedLagDoesNotStall stalled at random.)
func TestCoreWaitFeedReachesTheRunner(t *testing.T) {
	peer := "peer-fingerprint"
	c := newSyncCore(sessionConfig{}, peer, helloMsg{Replica: "me", Policy: "p1", Colls: []string{"notes"}, Nonce: make([]byte, reconNonceLen)})
	hello, err := encodeMsg(&wireMsg{T: msgHello, Hello: &helloMsg{Replica: peer, Policy: "p1", Colls: []string{"notes"}, Nonce: make([]byte, reconNonceLen)}})
	if err != nil {
		t.Fatal(err)
	}
	// drive hands out every Ready, answering requests: admission with
	// the feed's end at 2, and every feed read with nothing readable
	// (upTo stays where it was). It returns the last Ready's WaitFeed.
	drive := func(ev coreEvent) (waitFeed bool, reads int) {
		t.Helper()
		if err := c.Step(ev); err != nil {
			t.Fatal(err)
		}
		for c.HasReady() {
			rd := c.Ready()
			c.Advance()
			waitFeed = rd.WaitFeed
			switch {
			case rd.Req == nil:
			case rd.Req.kind == reqAdmit:
				if err := c.Step(coreEvent{kind: evAdmitted, lastSeq: 2}); err != nil {
					t.Fatal(err)
				}
			case rd.Req.kind == reqFeed:
				reads++
				if err := c.Step(coreEvent{kind: evRecords, upTo: rd.Req.after, lastSeq: 2}); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("unexpected request %d", rd.Req.kind)
			}
		}
		return waitFeed, reads
	}
	// The peer's hello: admission, then the first read, which shows
	// nothing.
	if waitFeed, reads := drive(coreEvent{kind: evFrame, frame: hello}); reads != 1 || !waitFeed {
		t.Fatalf("after the hello: %d feed reads, WaitFeed %v; want one read, then WaitFeed handed to the runner", reads, waitFeed)
	}
	for turn := range 3 {
		waitFeed, reads := drive(coreEvent{kind: evTurn, lastSeq: 2})
		if reads != 1 || !waitFeed {
			t.Fatalf("turn %d: %d feed reads, WaitFeed %v; want one read, then WaitFeed handed to the runner", turn, reads, waitFeed)
		}
	}
}
