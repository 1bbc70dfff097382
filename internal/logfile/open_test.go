package logfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// readOnlyDir returns a directory holding the file "old.log" in which
// this process may not write. Root may write anywhere permissions
// forbid, so as root the directory is a tmpfs remounted read-only.
func readOnlyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		if err := os.WriteFile(filepath.Join(dir, "old.log"), []byte("old\n"), 0o444); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		return dir
	}
	testutil.MountTmpfs(t, dir, "size=64k")
	if err := os.WriteFile(filepath.Join(dir, "old.log"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, "size=64k"); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
	return dir
}

// TestCheckWritable: what check says of a log path, and that asking
// creates and changes nothing.
func TestCheckWritable(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "sessions.log")
	if err := os.WriteFile(existing, []byte("kept\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(existing, filepath.Join(dir, "link.log")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	ro := readOnlyDir(t)
	for _, tc := range []struct {
		name string
		path string
		want []string // parts of the error; nil: no error
	}{
		{"off", "", nil},
		{"standard output", "-", nil},
		{"existing file", existing, nil},
		{"symlink to a file", filepath.Join(dir, "link.log"), nil},
		{"missing file in a writable directory", filepath.Join(dir, "new.log"), nil},
		{"missing directory", filepath.Join(dir, "no", "such.log"),
			[]string{filepath.Join(dir, "no", "such.log") + " cannot be created: directory " + filepath.Join(dir, "no") + " does not exist"}},
		{"a directory", dir, []string{"log file " + dir + ": not a regular file (a directory); name a file in it"}},
		{"a named pipe", filepath.Join(dir, "fifo"), []string{filepath.Join(dir, "fifo") + `: not a regular file (a named pipe); use "-" for standard output`}},
		{"a device", "/dev/null", []string{"/dev/null: not a regular file (a device)"}},
		{"parent is a file", filepath.Join(existing, "x.log"),
			[]string{"log file " + filepath.Join(existing, "x.log") + ": not a directory"}},
		{"file not writable", filepath.Join(ro, "old.log"), []string{filepath.Join(ro, "old.log") + " cannot be opened for appending: "}},
		{"directory not writable", filepath.Join(ro, "new.log"),
			[]string{filepath.Join(ro, "new.log") + " cannot be created: directory " + ro + " is not writable: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			err := CheckWritable(tc.path)
			if tc.want == nil {
				is.NoErr(err)
				return
			}
			is.True(err != nil)
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
		})
	}
	is := is.New(t)
	got, err := os.ReadFile(existing)
	is.NoErr(err)
	is.Equal(string(got), "kept\n") // opened, not written
	_, err = os.Stat(filepath.Join(dir, "new.log"))
	is.True(os.IsNotExist(err)) // checked, not created
	_, err = os.Stat(filepath.Join(dir, "no"))
	is.True(os.IsNotExist(err))
}
