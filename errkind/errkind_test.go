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
