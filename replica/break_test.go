package replica

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestUnreachableFileSystemError: a local file system error during a
// session is no reason to call the peer Offline (syscall.Errno implements
// net.Error, so a *fs.PathError around EIO used to count as one).
func TestUnreachableFileSystemError(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.EISDIR, syscall.EACCES, syscall.EROFS} {
		err := fmt.Errorf("save: %w", &fs.PathError{Op: "write", Path: "000001.vlog", Err: errno})
		if unreachable(err) {
			t.Errorf("%v: counted as the peer being unreachable", err)
		}
	}
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	if !unreachable(fmt.Errorf("dial: %w", netErr)) {
		t.Error("a refused dial is unreachable")
	}
}

// TestPairNegativeExpiry: Pair with a negative duration is ErrInvalid and
// records no grant (it used to record a grant until revoked).
func TestPairNegativeExpiry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a, b := e.replica("a"), e.replica("b")
	before := len(a.Consent().Live())
	if _, err := a.Pair(ctx, b.ID(), []string{"new-collection"}, -time.Hour); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Pair(-1h) = %v, want ErrInvalid", err)
	}
	if after := len(a.Consent().Live()); after != before {
		t.Fatalf("%d live grants after a refused Pair, %d before", after, before)
	}
}
