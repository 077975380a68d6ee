package replica

import (
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"testing"
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
