package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestMemPropertyNoSilentLossOrReorder drives both ends of one connection
// from a single goroutine (TryRecv never blocks) under random fault
// probabilities and random manual faults, and checks against a model that
// each side receives exactly a prefix of what the other sent, in order, and
// that a shortfall is always explained: an error it reported (ErrCut, only
// if a cut could happen) or a black hole (only if a drop could happen). A
// connection without faults delivers everything, then io.EOF.
func TestMemPropertyNoSilentLossOrReorder(t *testing.T) {
	var stats struct{ sent, frames, eof, cut, silent int }
	defer func() {
		t.Logf("frames sent %d, received %d; ends: io.EOF %d, ErrCut %d, silent %d", stats.sent, stats.frames, stats.eof, stats.cut, stats.silent)
		if !t.Failed() && (stats.frames == 0 || stats.eof == 0 || stats.cut == 0 || stats.silent == 0) {
			t.Error("the generated runs did not cover every outcome")
		}
	}()
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Int64().Draw(rt, "seed")
		prob := rapid.SampledFrom([]float64{0, 0, 0, 0.01, 0.1})
		f := Faults{
			Cut:   prob.Draw(rt, "cut"),
			Drop:  prob.Draw(rt, "drop"),
			Delay: rapid.SampledFrom([]float64{0, 0.3, 1}).Draw(rt, "delay"),
		}
		if f.Delay > 0 {
			f.MaxDelay = time.Duration(rapid.Int64Range(1, int64(time.Second)).Draw(rt, "maxDelay"))
		}
		n := NewMemNetwork(seed, func(s string) { rt.Log(s) })
		defer n.Close()
		n.SetLimits(0, 1<<30) // Send never blocks: one goroutine drives both ends
		if err := n.SetFaults(f); err != nil {
			rt.Fatal(err)
		}
		ln, err := n.Listen("b", pubB)
		if err != nil {
			rt.Fatal(err)
		}
		ctx := context.Background()
		dc, err := n.Dialer("a", pubA).Dial(ctx, "b")
		if err != nil {
			rt.Fatal(err)
		}
		ac, err := ln.Accept(ctx)
		if err != nil {
			rt.Fatal(err)
		}
		conns := [2]*MemConn{dc.(*MemConn), ac.(*MemConn)}

		// Model, per side s: sent[s] are the frames side s sent successfully,
		// recv[s] those side s received; ended[s] is the error that ended
		// side s's receiving.
		var (
			sent, recv   [2][][]byte
			ended        [2]error
			closed       [2]bool
			cutPossible  = f.Cut > 0
			dropPossible = f.Drop > 0
			next         int
		)
		send := func(rt *rapid.T, s int) {
			if closed[s] {
				rt.Skip("closed")
			}
			next++
			frame := []byte(fmt.Sprintf("%d:%d", s, next))
			err := conns[s].Send(ctx, frame)
			switch {
			case err == nil:
				sent[s] = append(sent[s], frame)
			case errors.Is(err, ErrCut):
				if !cutPossible {
					rt.Fatalf("side %d: Send: ErrCut without any cut possible", s)
				}
			case errors.Is(err, ErrClosed):
				if !closed[1-s] {
					rt.Fatalf("side %d: Send: %v, but the peer did not close", s, err)
				}
			default:
				rt.Fatalf("side %d: Send: %v", s, err)
			}
		}
		receive := func(rt *rapid.T, s int) (more bool) {
			frame, ok, err := conns[s].TryRecv()
			p := 1 - s
			switch {
			case ok:
				if ended[s] != nil {
					rt.Fatalf("side %d: frame %q after %v", s, frame, ended[s])
				}
				i := len(recv[s])
				if i >= len(sent[p]) || !bytes.Equal(frame, sent[p][i]) {
					rt.Fatalf("side %d: received %q as frame %d; peer sent %q", s, frame, i, sent[p])
				}
				recv[s] = append(recv[s], frame)
				return true
			case err == io.EOF:
				if !closed[p] {
					rt.Fatalf("side %d: io.EOF but the peer did not close", s)
				}
				if len(recv[s]) != len(sent[p]) {
					rt.Fatalf("side %d: io.EOF after %d of %d frames", s, len(recv[s]), len(sent[p]))
				}
				ended[s] = err
			case errors.Is(err, ErrCut):
				if !cutPossible {
					rt.Fatalf("side %d: ErrCut without any cut possible", s)
				}
				ended[s] = err
			case err != nil:
				rt.Fatalf("side %d: TryRecv: %v", s, err)
			}
			return false
		}

		rt.Repeat(map[string]func(*rapid.T){
			"sendA": func(rt *rapid.T) {
				for range rapid.IntRange(1, 8).Draw(rt, "burst") {
					send(rt, 0)
				}
			},
			"sendB": func(rt *rapid.T) {
				for range rapid.IntRange(1, 8).Draw(rt, "burst") {
					send(rt, 1)
				}
			},
			"recvA": func(rt *rapid.T) {
				if closed[0] {
					rt.Skip("closed")
				}
				for range rapid.IntRange(1, 8).Draw(rt, "burst") {
					receive(rt, 0)
				}
			},
			"recvB": func(rt *rapid.T) {
				if closed[1] {
					rt.Skip("closed")
				}
				for range rapid.IntRange(1, 8).Draw(rt, "burst") {
					receive(rt, 1)
				}
			},
			"advance": func(rt *rapid.T) {
				n.Advance(time.Duration(rapid.Int64Range(0, int64(time.Second)).Draw(rt, "d")))
			},
			"cut": func(rt *rapid.T) {
				if rapid.IntRange(0, 9).Draw(rt, "rare") != 0 {
					rt.Skip("rare")
				}
				cutPossible = true
				conns[rapid.IntRange(0, 1).Draw(rt, "side")].Cut()
			},
			"drop": func(rt *rapid.T) {
				if rapid.IntRange(0, 9).Draw(rt, "rare") != 0 {
					rt.Skip("rare")
				}
				dropPossible = true
				conns[rapid.IntRange(0, 1).Draw(rt, "side")].Drop()
			},
			"partition": func(rt *rapid.T) {
				if rapid.IntRange(0, 9).Draw(rt, "rare") != 0 {
					rt.Skip("rare")
				}
				cutPossible = true
				n.Partition("a", "b")
				n.Heal("a", "b")
			},
			"close": func(rt *rapid.T) {
				if rapid.IntRange(0, 9).Draw(rt, "rare") != 0 {
					rt.Skip("rare")
				}
				s := rapid.IntRange(0, 1).Draw(rt, "side")
				closed[s] = true
				_ = conns[s].Close()
			},
		})

		// Let every held frame arrive and drain both ends: without faults,
		// everything sent has arrived.
		n.Advance(time.Second + 1)
		for s := range 2 {
			if !closed[s] {
				for receive(rt, s) {
				}
				if !cutPossible && !dropPossible && len(recv[s]) != len(sent[1-s]) {
					rt.Fatalf("side %d: %d of %d frames without any fault", s, len(recv[s]), len(sent[1-s]))
				}
			}
		}
		// Close the peer of each open end: the end must see io.EOF after
		// everything, ErrCut, or (only if a drop was possible) silence.
		for s := range 2 {
			if closed[s] {
				continue
			}
			if !closed[1-s] {
				closed[1-s] = true
				_ = conns[1-s].Close()
			}
			for receive(rt, s) {
			}
			if ended[s] == nil && !dropPossible {
				rt.Fatalf("side %d: stuck after %d of %d frames with no error and no drop possible", s, len(recv[s]), len(sent[1-s]))
			}
		}
		stats.frames += len(recv[0]) + len(recv[1])
		stats.sent += len(sent[0]) + len(sent[1])
		for s := range 2 {
			switch {
			case ended[s] == io.EOF:
				stats.eof++
			case ended[s] != nil:
				stats.cut++
			case dropPossible:
				stats.silent++
			}
		}
	})
}
