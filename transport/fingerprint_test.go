package transport

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"strings"
	"testing"
)

func TestFingerprint(t *testing.T) {
	sum := sha256.Sum256(pubA)
	want := strings.ToLower(strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:]), "="))
	got := Fingerprint(pubA)
	if got != want {
		t.Fatalf("Fingerprint = %s, want %s (base32 of SHA-256 of the raw key)", got, want)
	}
	if len(got) != FingerprintLen {
		t.Fatalf("len = %d, want %d", len(got), FingerprintLen)
	}
	if Fingerprint(pubA) == Fingerprint(pubB) {
		t.Fatal("two keys share a fingerprint")
	}
	if Fingerprint(ed25519.PublicKey{1, 2, 3}) != "" {
		t.Fatal("a short key has a fingerprint")
	}
}

func TestParseFingerprint(t *testing.T) {
	fp := Fingerprint(pubA)
	var grouped []string
	for i := 0; i < len(fp); i += 4 {
		grouped = append(grouped, fp[i:min(i+4, len(fp))])
	}
	for _, in := range []string{fp, strings.ToUpper(fp), strings.Join(grouped, "-"), strings.Join(grouped, " ")} {
		got, err := ParseFingerprint(in)
		if err != nil || got != fp {
			t.Errorf("ParseFingerprint(%q) = %q, %v; want %q", in, got, err, fp)
		}
	}
	// The last character carries one bit and four zero bits: only 'a' or
	// 'q' are canonical there.
	last := fp[len(fp)-1]
	other := byte('b')
	if last == 'q' {
		other = 'r'
	}
	bad := []string{
		"",
		fp[:len(fp)-1],
		fp + "a",
		fp[:len(fp)-1] + string(other),
		fp[:10] + "0" + fp[11:], // '0' and '1' are not in the alphabet
		fp[:10] + "!" + fp[11:],
	}
	for _, in := range bad {
		if got, err := ParseFingerprint(in); err == nil {
			t.Errorf("ParseFingerprint(%q) = %q, want an error", in, got)
		}
	}
}

func TestPinSet(t *testing.T) {
	var zero PinSet
	if zero.Allowed(pubA) {
		t.Fatal("the zero PinSet allows a key")
	}
	zero.Add(pubA)
	if !zero.Allowed(pubA) {
		t.Fatal("the zero PinSet is not usable")
	}
	s := NewPinSet(pubA)
	if !s.Allowed(pubA) || s.Allowed(pubB) {
		t.Fatal("NewPinSet pins the wrong keys")
	}
	if err := s.AddFingerprint(strings.ToUpper(Fingerprint(pubB))); err != nil {
		t.Fatal(err)
	}
	if !s.Allowed(pubB) {
		t.Fatal("AddFingerprint did not pin")
	}
	if err := s.AddFingerprint("not a fingerprint"); err == nil {
		t.Fatal("AddFingerprint accepted garbage")
	}
	want := []string{Fingerprint(pubA), Fingerprint(pubB)}
	slices.Sort(want)
	if got := s.Fingerprints(); !slices.Equal(got, want) {
		t.Fatalf("Fingerprints = %v, want %v", got, want)
	}
	s.Remove(pubA)
	if s.Allowed(pubA) {
		t.Fatal("Remove did not unpin")
	}
	if s.Allowed(ed25519.PublicKey{}) {
		t.Fatal("an empty key is allowed")
	}
	var f Pins = PinFunc(func(pub ed25519.PublicKey) bool { return pub.Equal(pubC) })
	if !f.Allowed(pubC) || f.Allowed(pubA) {
		t.Fatal("PinFunc does not call its function")
	}
}
