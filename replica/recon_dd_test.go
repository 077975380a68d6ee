package replica

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// TestReconScripts runs the reconciliation engine through the scripts in
// testdata/recon, which read as conversations between replicas:
//
//	put NAME            records, one per input line: coll/id head [head...]
//	fill NAME COLL N    N records COLL/0 ... COLL/N-1, record i at head hi
//	copy FROM TO        TO's set becomes FROM's (a sync, or a restore)
//	reconcile A B [list=N]
//	                    A (initiator) and B reconcile; prints every frame
//	                    and every record sent, then applies the sends;
//	                    list=N: a bucket holding more than N records is
//	                    split by key tag (reconListSmall otherwise)
//	diff A B            records that differ between A and B
func TestReconScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/recon", func(t *testing.T, path string) {
		sets := map[string]*memSet{}
		get := func(name string) *memSet {
			if sets[name] == nil {
				sets[name] = newMemSet()
			}
			return sets[name]
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
				s := get(arg(0))
				for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
					f := strings.Fields(line)
					if len(f) < 2 {
						d.Fatalf(t, "bad record line %q", line)
					}
					coll, id, _ := strings.Cut(f[0], "/")
					s.put(coll, id, f[1:]...)
				}
				return fmt.Sprintf("%s holds %d records", arg(0), len(s.recs))
			case "fill":
				s := get(arg(0))
				n, err := strconv.Atoi(arg(2))
				if err != nil {
					d.Fatalf(t, "fill: %v", err)
				}
				for i := range n {
					s.put(arg(1), fmt.Sprint(i), fmt.Sprint("h", i))
				}
				return fmt.Sprintf("%s holds %d records", arg(0), len(s.recs))
			case "copy":
				from, to := get(arg(0)), get(arg(1))
				to.recs = map[recRef][][]byte{}
				for r, hs := range from.recs {
					to.recs[r] = hs
				}
				to.cache = nil
				return fmt.Sprintf("%s holds %d records", arg(1), len(to.recs))
			case "reconcile":
				listSmall := reconListSmall
				if d.HasArg("list") {
					d.ScanArgs(t, "list", &listSmall)
				}
				return conversation(t, arg(0), arg(1), get(arg(0)), get(arg(1)), listSmall)
			case "diff":
				return diffSets(get(arg(0)), get(arg(1)))
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}

func describeFrame(m *reconMsg) string {
	var parts []string
	for _, r := range m.Ranges {
		if r.Mode != rangeSplit {
			parts = append(parts, describeRanges([]reconRange{r}))
			continue
		}
		sub, _ := r.expand()
		parts = append(parts, fmt.Sprintf("split%s{%s}", rangeName(r), describeRanges(sub)))
	}
	for _, h := range m.Heads {
		if h.Lack {
			parts = append(parts, "lack")
		} else {
			parts = append(parts, fmt.Sprintf("heads(round %d, %d)", h.Round, len(h.Heads)))
		}
	}
	if m.Reply {
		parts = append(parts, "reply")
	}
	if len(parts) == 0 {
		return "(nothing)"
	}
	return strings.Join(parts, " ")
}

// rangeName writes buckets [lo,hi) as [lo,hi), and a part of bucket b as
// [b].i.j...: the part's index at each depth, in hex.
func rangeName(r reconRange) string {
	if r.Sub == 0 {
		return fmt.Sprintf("[%d,%d)", r.Lo, r.Hi)
	}
	d, _ := subDepth(r.Sub)
	name := fmt.Sprintf("[%d]", r.Lo)
	for i := d - 1; i >= 0; i-- {
		name += fmt.Sprintf(".%x", r.Sub>>(4*i)&15)
	}
	return name
}

// describeRanges describes ranges, adjacent empty ones as one.
func describeRanges(rs []reconRange) string {
	var parts []string
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch r.Mode {
		case rangeFP:
			parts = append(parts, "fp"+rangeName(r))
		case rangeItems:
			parts = append(parts, fmt.Sprintf("items%sx%d", rangeName(r), len(r.Items)/reconItemLen))
		case rangeEmpty:
			j := i
			for j+1 < len(rs) && rs[j+1].Mode == rangeEmpty && r.Sub == 0 && rs[j+1].Sub == 0 {
				j++
			}
			if j > i {
				r.Hi = rs[j].Hi
				i = j
			}
			parts = append(parts, "empty"+rangeName(r))
		}
	}
	return strings.Join(parts, " ")
}

// conversation runs a reconciliation between a and b, delivering frames in
// order, and prints it.
func conversation(t *testing.T, na, nb string, a, b *memSet, listSmall int) string {
	ctx := context.Background()
	var out strings.Builder
	key := reconKey(na, nb, []byte("nonce-"+na), []byte("nonce-"+nb))
	ea, eb := newReconEngine(key, true), newReconEngine(key, false)
	ea.listSmall, eb.listSmall = uint64(listSmall), uint64(listSmall)
	first, err := ea.start(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	type frame struct {
		from string
		m    *reconMsg
	}
	queue := []frame{}
	for _, m := range first {
		queue = append(queue, frame{na, m})
	}
	sent := map[string]int{}
	for steps := 0; len(queue) > 0; steps++ {
		if steps > 10000 {
			t.Fatal("the conversation does not end")
		}
		f := queue[0]
		queue = queue[1:]
		to, e, from, data, fromData := nb, eb, na, b, a
		if f.from == nb {
			to, e, from, data, fromData = na, ea, nb, a, b
		}
		fmt.Fprintf(&out, "%s -> %s: %s\n", from, to, describeFrame(f.m))
		replies, sends, err := e.step(ctx, data, f.m)
		if err != nil {
			fmt.Fprintf(&out, "%s: error: %v\n", to, err)
			return out.String()
		}
		for _, s := range expandAll(t, e, data, sends) {
			how := "whole"
			if len(s.since) > 0 {
				how = fmt.Sprintf("since %d heads", len(s.since))
			}
			fmt.Fprintf(&out, "%s sends %s/%s (%s)\n", to, s.coll, s.id, how)
			fromData.receive(data, s)
			sent[to]++
		}
		for _, m := range replies {
			queue = append(queue, frame{to, m})
		}
	}
	fmt.Fprintf(&out, "records sent: %s %d, %s %d; busy: %v %v", na, sent[na], nb, sent[nb], ea.busy(), eb.busy())
	return out.String()
}

func diffSets(a, b *memSet) string {
	var diffs []string
	for r, hs := range a.recs {
		if o, ok := b.recs[r]; !ok || !hasAll(hs, o) || !hasAll(o, hs) {
			diffs = append(diffs, r.coll+"/"+r.id)
		}
	}
	for r := range b.recs {
		if _, ok := a.recs[r]; !ok {
			diffs = append(diffs, r.coll+"/"+r.id)
		}
	}
	if len(diffs) == 0 {
		return "same"
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "\n")
}
