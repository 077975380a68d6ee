package errkind_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ferrysync/ferry/errkind"
)

func TestSentinelKind(t *testing.T) {
	for _, k := range errkind.Kinds {
		err := errkind.New("pkg: something", k)
		if err.Error() != "pkg: something" {
			t.Errorf("message %q", err.Error())
		}
		wrapped := fmt.Errorf("op: %w", err)
		if !errors.Is(wrapped, err) || !errors.Is(wrapped, k) {
			t.Errorf("%v: errors.Is lost the sentinel or its kind", k)
		}
		for _, other := range errkind.Kinds {
			if other != k && errors.Is(wrapped, other) {
				t.Errorf("%v is also %v", k, other)
			}
		}
		if errors.Is(err, errkind.New("pkg: something", k)) {
			t.Error("two sentinels with one message are the same error")
		}
	}
}

// duck is a sentinel of a package that does not import errkind (as
// storage's are): its kind is a name.
type duck struct{ msg, kind string }

func (e *duck) Error() string     { return e.msg }
func (e *duck) ErrorKind() string { return e.kind }
func (e *duck) Is(target error) bool {
	k, ok := target.(interface{ KindName() string })
	return ok && k.KindName() == e.kind
}

func TestDuckTypedKind(t *testing.T) {
	for _, k := range errkind.Kinds {
		err := &duck{"pkg: something", k.KindName()}
		same := &duck{"pkg: other", k.KindName()}
		wrapped := fmt.Errorf("op: %w", err)
		if !errors.Is(wrapped, err) || !errors.Is(wrapped, k) {
			t.Errorf("%v: errors.Is lost the duck-typed sentinel or its kind", k)
		}
		if got := errkind.Of(wrapped); got != k {
			t.Errorf("Of(%v) = %v, want %v", wrapped, got, k)
		}
		if errors.Is(wrapped, same) || errors.Is(same, err) {
			t.Errorf("%v: two sentinels of one kind are the same error", k)
		}
		if errors.Is(wrapped, errkind.New("pkg: something", k)) {
			t.Errorf("%v: a duck-typed sentinel matches a New sentinel of its kind", k)
		}
		for _, other := range errkind.Kinds {
			if other != k && errors.Is(wrapped, other) {
				t.Errorf("%v is also %v", k, other)
			}
		}
	}
}

func TestOf(t *testing.T) {
	if k := errkind.Of(errors.New("plain")); k != nil {
		t.Errorf("Of(plain) = %v, want nil", k)
	}
	if k := errkind.Of(nil); k != nil {
		t.Errorf("Of(nil) = %v", k)
	}
	for _, k := range errkind.Kinds {
		if got := errkind.Of(fmt.Errorf("x: %w", errkind.New("s", k))); got != k {
			t.Errorf("Of(New(%v)) = %v", k, got)
		}
		if got := errkind.Of(&duck{"s", "no such kind"}); got != nil {
			t.Errorf("Of(unknown kind name) = %v, want nil", got)
		}
	}
}
