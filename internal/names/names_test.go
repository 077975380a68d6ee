package names

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"pgregory.net/rapid"
)

// awkward draws strings from bytes that make joins ambiguous: NUL, other
// control bytes, 0xff (the escape of RecordKey), bytes of broken UTF-8,
// and small varint-looking bytes, with a few letters, so that collisions
// would be found if they existed.
func awkward() *rapid.Generator[string] {
	b := rapid.SampledFrom([]byte{0x00, 0x00, 0x01, 0x02, 0x1f, 0x7f, 0x80, 0xc3, 0xff, 'a', 'b', '/', ':'})
	return rapid.Custom(func(t *rapid.T) string {
		return string(rapid.SliceOfN(b, 0, 6).Draw(t, "bytes"))
	})
}

// TestRecordKeyInjective: two different (collection, id) pairs never share
// a record key, over arbitrary bytes. The pairs are drawn both
// independently and as two cuts of one string (the way "a","b\x00c" and
// "a\x00b","c" meet under a NUL join).
func TestRecordKeyInjective(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var c1, i1, c2, i2 string
		if rapid.Bool().Draw(t, "cut") {
			w := awkward().Draw(t, "w") + "\x00" + awkward().Draw(t, "w2")
			a := rapid.IntRange(0, len(w)).Draw(t, "a")
			b := rapid.IntRange(0, len(w)).Draw(t, "b")
			c1, i1 = w[:a], w[a:]
			c2, i2 = w[:b], w[b:]
			if a < len(w) && w[a] == 0 && rapid.Bool().Draw(t, "drop1") {
				i1 = w[a+1:]
			}
			if b < len(w) && w[b] == 0 && rapid.Bool().Draw(t, "drop2") {
				i2 = w[b+1:]
			}
		} else {
			c1, i1 = awkward().Draw(t, "c1"), awkward().Draw(t, "i1")
			c2, i2 = awkward().Draw(t, "c2"), awkward().Draw(t, "i2")
		}
		same := c1 == c2 && i1 == i2
		if got := RecordKey(c1, i1) == RecordKey(c2, i2); got != same {
			t.Fatalf("RecordKey(%q,%q) vs RecordKey(%q,%q): equal=%v, pairs equal=%v", c1, i1, c2, i2, got, same)
		}
	})
}

// TestKeyInjective: Key of two different part sequences differs, whatever
// the number of parts and their bytes.
func TestKeyInjective(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p1 := rapid.SliceOfN(awkward(), 0, 4).Draw(t, "p1")
		var p2 []string
		if rapid.Bool().Draw(t, "shift") && len(p1) > 0 {
			// The same bytes cut differently.
			all := strings.Join(p1, "")
			cuts := rapid.SliceOfN(rapid.IntRange(0, len(all)), 0, 4).Draw(t, "cuts")
			slices.Sort(cuts)
			prev := 0
			for _, c := range cuts {
				p2 = append(p2, all[prev:c])
				prev = c
			}
			p2 = append(p2, all[prev:])
		} else {
			p2 = rapid.SliceOfN(awkward(), 0, 4).Draw(t, "p2")
		}
		if got := Key(p1...) == Key(p2...); got != slices.Equal(p1, p2) {
			t.Fatalf("Key(%q) vs Key(%q): equal=%v", p1, p2, got)
		}
	})
}

// TestRecordKeyKeepsStoredForm: for every collection a store can hold
// (no NUL), the key is the NUL join that stores already use.
func TestRecordKeyKeepsStoredForm(t *testing.T) {
	if got := RecordKey("notes", "n1"); got != "notes\x00n1" {
		t.Fatalf("RecordKey = %q", got)
	}
	// The example of issue 11: two records that shared one key.
	if RecordKey("a", "b\x00c") == RecordKey("a\x00b", "c") {
		t.Fatal("the NUL-shifted pair shares a key")
	}
}

func TestCheck(t *testing.T) {
	long := strings.Repeat("é", MaxLen/2) // exactly MaxLen bytes
	for _, s := range []string{"a", "notes", "my notes", " padded ", "a/b/c", "user:42", "2026-11-29T10:00:00Z",
		"Ünïcödé", "日本語", "😀🎉", "a\u200db", "\ufffd", "\u00a0", "x.y-z_w~", long, strings.Repeat("a", MaxLen)} {
		if err := Check("id", s); err != nil {
			t.Errorf("Check(%q) = %v, want valid", s, err)
		}
	}
	for _, s := range []string{"", "a\x00b", "\x00", "tab\there", "line\n", "\r", "\x1b[31m", "del\x7f", "c1\u0085", "c1\u009f",
		"bad\xffutf8", "\xc3", "\xed\xa0\x80" /* surrogate */, strings.Repeat("a", MaxLen+1), long + "a"} {
		if err := Check("id", s); err == nil {
			t.Errorf("Check(%q) = nil, want an error", s)
		}
	}
}

// TestCheckMatchesRule: over arbitrary bytes, Check accepts exactly the
// strings of the documented rule, and its message is one line.
func TestCheckMatchesRule(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := rapid.OneOf(awkward(), rapid.String(), rapid.StringN(0, 8, MaxLen+2)).Draw(t, "s")
		want := s != "" && len(s) <= MaxLen && utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
			return r < 0x20 || (r >= 0x7f && r <= 0x9f)
		})
		err := Check("collection", s)
		if (err == nil) != want {
			t.Fatalf("Check(%q) = %v, want valid=%v", s, err, want)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("message spans lines: %q", err)
		}
	})
}
