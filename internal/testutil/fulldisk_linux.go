package testutil

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs with the mount options opts ("size=256k") on
// dir, for the tests of a full disk, and unmounts it when the test ends.
// It needs root: the callers skip before it when not root.
func MountTmpfs(t testing.TB, dir, opts string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// FillDisk writes to path until the file system it is on is full, and
// returns how many bytes that took.
func FillDisk(t testing.TB, path string) int {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	total := 0
	for {
		n, err := f.Write(chunk)
		total += n
		if errors.Is(err, syscall.ENOSPC) {
			return total
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
		if total > 64<<20 {
			t.Fatalf("fill %s: %d bytes and still not full", path, total)
		}
	}
}
