package logfile

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// TestFileRealFullDisk runs a session log on a real file system that
// fills up (a 256 KiB tmpfs): writes fail with ENOSPC, one of them in the
// middle of a record; the failure is counted and reported once, the
// records wait, and once the filler is removed they are written, the cut
// one completed first, so the file holds only whole records, in order.
func TestFileRealFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs to fill needs root; CI runs this test as root")
	}
	is := is.New(t)
	dir := t.TempDir()
	testutil.MountTmpfs(t, dir, "size=256k")
	path := filepath.Join(dir, "sessions.log")
	rec := &recorder{}
	l := Open(path, Options{Logger: slog.New(rec), Name: "sessions", FlushInterval: 2 * time.Millisecond})
	t.Cleanup(func() { l.Close() }) // before the unmount: cleanups run last first

	// The file takes its first records, and so holds a part-filled page.
	const first = 10
	for _, r := range records(0, first) {
		l.Write([]byte(r))
	}
	testutil.WaitFor(t, "the first records written", func() bool { return l.Queued() == 0 })
	filler := filepath.Join(dir, "filler")
	t.Logf("filled the tmpfs with %d bytes", testutil.FillDisk(t, filler))

	// The disk is full: what is left of the log's page takes part of
	// the records, the rest wait.
	const during = 300 // 15 KiB: more than any page size leaves
	for _, r := range records(first, first+during) {
		n, err := l.Write([]byte(r))
		is.NoErr(err) // a full disk is never the caller's error
		is.Equal(n, len(r))
	}
	testutil.WaitFor(t, "a write to fail", func() bool { return l.WriteErrors() > 0 })
	is.True(l.Queued() > 0)
	is.Equal(l.Dropped(), uint64(0)) // 1 MiB of queue holds them all
	got, err := os.ReadFile(path)
	is.NoErr(err)
	whole := checkWhole(t, string(got), true) // a cut at the end, nothing glued to it
	t.Logf("%d whole records before ENOSPC, cut: %t", len(whole), !strings.HasSuffix(string(got), "\n"))
	errs := rec.at(slog.LevelError)
	is.Equal(len(errs), 1) // one line, however many retries failed
	is.Equal(errs[0].Message, "log write failed: no space left on device; records are queued and retried")
	is.Equal(attrOf(errs[0], "path"), path)

	// Space comes back: the flusher writes what waits.
	is.NoErr(os.Remove(filler))
	testutil.WaitFor(t, "the queued records written", func() bool { return l.Queued() == 0 })
	const after = 5
	for _, r := range records(first+during, first+during+after) {
		l.Write([]byte(r))
	}
	is.NoErr(l.Flush())
	got, err = os.ReadFile(path)
	is.NoErr(err)
	is.Equal(string(got), strings.Join(records(0, first+during+after), "")) // every record, whole, in order
	is.True(slices.Equal(checkWhole(t, string(got), false), seq(first+during+after)))
	is.Equal(len(rec.at(slog.LevelError)), 1)
	infos := rec.at(slog.LevelInfo)
	is.Equal(len(infos), 1)
	is.Equal(infos[0].Message, "log writes succeed again")
	is.Equal(attrOf(infos[0], "dropped"), "0")
	is.True(l.WriteErrors() >= 1)
}

// seq returns 0..n-1.
func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestNewUnwritablePath: New in a directory that does not exist yet
// returns the open error naming the path and a File that works anyway:
// it keeps the records, counts the failure, and writes them once the
// directory exists and the File is reopened (SIGUSR1) or pointed at the
// path again (a reload).
func TestNewUnwritablePath(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(l *File, path string) error
	}{
		{"reopen", func(l *File, _ string) error { return l.Reopen() }},
		{"set path", func(l *File, path string) error { return l.SetPath(path) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			dir := filepath.Join(t.TempDir(), "log")
			path := filepath.Join(dir, "fail2ban.log")
			l, err := New(path, nil)
			is.True(err != nil)
			is.True(errors.Is(err, syscall.ENOENT))
			is.True(strings.Contains(err.Error(), path))
			is.True(l != nil) // usable all the same
			defer l.Close()
			is.True(l.Enabled())
			is.Equal(l.Path(), path)
			for _, r := range records(0, 3) {
				n, err := l.Write([]byte(r))
				is.NoErr(err)
				is.Equal(n, len(r))
			}
			is.Equal(l.Queued(), 3)
			failed := l.WriteErrors()
			is.True(failed >= 1)             // the open in New (and any retry since)
			is.True(tc.open(l, path) != nil) // still missing
			is.True(l.WriteErrors() > failed)

			is.NoErr(os.Mkdir(dir, 0o755))
			is.NoErr(tc.open(l, path))
			l.Write([]byte(record(3)))
			is.NoErr(l.Flush())
			got, err := os.ReadFile(path)
			is.NoErr(err)
			is.Equal(string(got), strings.Join(records(0, 4), ""))
			is.Equal(l.Dropped(), uint64(0))
		})
	}
}
