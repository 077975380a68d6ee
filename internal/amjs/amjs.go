package amjs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

var (
	installOnce sync.Once
	installErr  error
)

// Dir is the directory holding package.json and node_modules.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "js")
}

func install() error {
	dir := Dir()
	lock, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@automerge", "automerge", "package.json")); err == nil {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--silent")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci in %s: %v: %s", dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// Available installs the package if needed and reports why it cannot be
// used, or nil.
func Available() error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node not found: %w", err)
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return fmt.Errorf("npm not found: %w", err)
	}
	installOnce.Do(func() { installErr = install() })
	return installErr
}

// Require skips t (or fails it under CI=true where Node.js is present)
// when the reference implementation cannot be used.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if _, nodeErr := exec.LookPath("node"); nodeErr == nil && os.Getenv("CI") == "true" {
			t.Fatalf("amjs: @automerge/automerge unavailable under CI: %v", err)
		}
		t.Skipf("amjs: skipping, the reference Automerge implementation is unavailable: %v", err)
	}
}

// Run runs an ES module script with @automerge/automerge importable and
// returns its standard output. args are passed as process.argv[2:]. A
// non-zero exit fails the test with the script's stderr.
func Run(t testing.TB, script string, args ...string) []byte {
	t.Helper()
	Require(t)
	f, err := os.CreateTemp(Dir(), "script-*.mjs")
	if err != nil {
		t.Fatalf("amjs: %v", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		t.Fatalf("amjs: %v", err)
	}
	f.Close()
	cmd := exec.Command("node", append([]string{f.Name()}, args...)...)
	cmd.Dir = Dir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("amjs: node script failed: %v\n%s", err, stderr.String())
	}
	return stdout.Bytes()
}
