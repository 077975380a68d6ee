package storage

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// anyName draws names of arbitrary bytes biased to the ones that make
// joins ambiguous (NUL, control bytes, varint-looking bytes, broken UTF-8).
func anyName() *rapid.Generator[string] {
	b := rapid.SampledFrom([]byte{0x00, 0x00, 0x01, 0x02, 0x05, 0x1f, 0x7f, 0x80, 0xff, 'a', 'b', '/'})
	return rapid.Custom(func(t *rapid.T) string { return string(rapid.SliceOfN(b, 0, 6).Draw(t, "bytes")) })
}

// TestBlindedKeyInputsInjective: for every key builder (collection prefix,
// record id, slot namespace, slot key), two different name tuples never
// give the same HMAC input, so never the same Badger key (short of an HMAC
// collision), whatever bytes the names hold.
func TestBlindedKeyInputsInjective(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		arity := rapid.IntRange(1, 2).Draw(t, "arity")
		tag := rapid.SampledFrom([]byte{'c', 'r', 'n', 'k'}).Draw(t, "tag")
		p1 := make([]string, arity)
		for i := range p1 {
			p1[i] = anyName().Draw(t, "p1")
		}
		var p2 []string
		if arity == 2 && rapid.Bool().Draw(t, "shift") {
			// The same bytes cut elsewhere: ("a", "b\x00c") against ("a\x00b", "c").
			all := p1[0] + p1[1]
			cut := rapid.IntRange(0, len(all)).Draw(t, "cut")
			p2 = []string{all[:cut], all[cut:]}
		} else {
			p2 = make([]string, arity)
			for i := range p2 {
				p2[i] = anyName().Draw(t, "p2")
			}
		}
		same := slices.Equal(p1, p2)
		if got := bytes.Equal(macInput(nil, tag, p1...), macInput(nil, tag, p2...)); got != same {
			t.Fatalf("macInput(%c, %q) vs (%q): equal=%v", tag, p1, p2, got)
		}
	})
}

// TestBlindedKeyFormat pins the on-disk encoding: existing stores find
// their records only as long as it does not change.
func TestBlindedKeyFormat(t *testing.T) {
	if got := string(macInput(nil, 'r', "notes", "n1")); got != "r\x05notesn1" {
		t.Fatalf("record input = %q", got)
	}
	if got := string(macInput(nil, 'c', "notes")); got != "cnotes" {
		t.Fatalf("collection input = %q", got)
	}
}

// TestNULShiftedNamesStayDistinct: the store keeps ("a", "b\x00c") and
// ("a\x00b", "c") apart, records and slots alike, across a reopen. (The
// replica refuses such names; the store is name-agnostic and must not mix
// them either.)
func TestNULShiftedNamesStayDistinct(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	a, b := newDoc("a", "b\x00c"), newDoc("a\x00b", "c")
	mustWrite(t, s, a.set(t, "v", "first"), b.set(t, "v", "second"))
	sl := s.Slots("ns")
	if err := sl.Put(ctx, "a\x00b", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Slots("ns\x00a").Put(ctx, "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	if got := field(t, s, "a", "b\x00c", "v"); got != "first" {
		t.Fatalf("a/b\\x00c holds %q", got)
	}
	if got := field(t, s, "a\x00b", "c", "v"); got != "second" {
		t.Fatalf("a\\x00b/c holds %q", got)
	}
	var ids []string
	if err := s.List(ctx, "a", func(m RecordMeta) error { ids = append(ids, m.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"b\x00c"}) {
		t.Fatalf("List(a) = %q", ids)
	}
	for _, c := range []struct{ ns, key, want string }{{"ns", "a\x00b", "1"}, {"ns\x00a", "b", "2"}} {
		v, ok, err := s.Slots(c.ns).Get(ctx, c.key)
		if err != nil || !ok || string(v) != c.want {
			t.Fatalf("slot %q/%q = %q %v %v, want %q", c.ns, c.key, v, ok, err, c.want)
		}
	}
}

// TestSlotKeyJoinsTwoNames: a slot key may hold two names of the longest
// length joined (a replica's per-record slots), and survives a reopen.
func TestSlotKeyJoinsTwoNames(t *testing.T) {
	ctx := context.Background()
	s, dir := newDiskStore(t)
	key := string(bytes.Repeat([]byte("k"), 2*maxNameLen+1))
	if err := s.Slots("shared/p").Put(ctx, key, []byte("v")); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	if v, ok, err := s.Slots("shared/p").Get(ctx, key); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get = %q %v %v", v, ok, err)
	}
	var keys []string
	if err := s.Slots("shared/p").Range(ctx, func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil || !slices.Equal(keys, []string{key}) {
		t.Fatalf("Range: %d keys, %v", len(keys), err)
	}
	wantErr(t, s.Slots("shared/p").Put(ctx, key+string(bytes.Repeat([]byte("k"), maxSlotKeyLen)), nil), ErrInvalid, "oversized slot key")
}
