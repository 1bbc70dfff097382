package logfile

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// TestFileFullDisk runs a File over a destination that fails with ENOSPC
// after taking part of what it was given, then recovers: what reaches
// it is only whole records, in order, with nothing lost but what the
// queue could not hold, and the failure is reported once and the
// recovery once.
func TestFileFullDisk(t *testing.T) {
	for _, tc := range []struct {
		name       string
		space      int // bytes taken before the failure; -1: no failure
		before     int // records written before the failure shows
		during     int // records written while the destination fails
		queueBytes int
	}{
		{"cut inside a record", recordLen*3 + 17, 5, 20, 0},
		{"cut at a record boundary", recordLen * 2, 5, 20, 0},
		{"cut in the first bytes", 3, 5, 20, 0},
		{"nothing taken", 0, 5, 20, 0},
		{"queue overflows", recordLen + 30, 5, 30, recordLen * 12},
		{"no failure", -1, 5, 20, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			disk := newFakeDisk(tc.space)
			rec := &recorder{}
			l := Open("-", Options{Stdout: disk, Logger: slog.New(rec), Name: "sessions",
				QueueBytes: tc.queueBytes, FlushInterval: 2 * time.Millisecond})
			defer l.Close()
			limit := tc.queueBytes
			if limit == 0 {
				limit = DefaultQueueBytes
			}

			// Before: the destination takes tc.space bytes, then fails.
			var stream string
			queued := 0 // bytes in the queue, as the File must count them
			for _, r := range records(0, tc.before) {
				n, err := l.Write([]byte(r))
				is.NoErr(err) // a failing destination is never the caller's error
				is.Equal(n, len(r))
				if queued+len(r) <= limit {
					stream += r
					queued += len(r)
				}
			}
			l.Flush()
			written := len(stream)
			if tc.space >= 0 {
				written = min(tc.space, len(stream))
			}
			queued = len(stream) - written

			// During: the destination takes nothing; the queue grows to its
			// bound, and what it cannot hold is dropped whole.
			if tc.space >= 0 {
				disk.setSpace(0)
			}
			wantDropped := 0
			for _, r := range records(tc.before, tc.before+tc.during) {
				n, err := l.Write([]byte(r))
				is.NoErr(err)
				is.Equal(n, len(r))
				if tc.space >= 0 && queued+len(r) > limit {
					wantDropped++
					continue
				}
				stream += r
				queued += len(r)
			}
			for range 3 {
				l.Flush()
			}
			if tc.space >= 0 {
				is.Equal(disk.String(), stream[:written]) // no byte after a cut record
				checkWhole(t, disk.String(), true)
				is.True(l.WriteErrors() >= 1)
				is.Equal(l.Dropped(), uint64(wantDropped))
				errs := rec.at(slog.LevelError)
				is.Equal(len(errs), 1) // one line for the whole failure
				is.Equal(errs[0].Message, "log write failed: no space left on device; records are queued and retried")
				is.Equal(attrOf(errs[0], "log"), "sessions")
			}

			// Space comes back: the flusher's next tick writes what waits,
			// the cut record first.
			disk.setSpace(-1)
			testutil.WaitFor(t, "queued records written", func() bool { return l.Queued() == 0 })
			after := records(tc.before+tc.during, tc.before+tc.during+5)
			for _, r := range after {
				l.Write([]byte(r))
				stream += r
			}
			is.NoErr(l.Flush())
			is.Equal(disk.String(), stream) // all, in order, each whole
			checkWhole(t, disk.String(), false)
			is.Equal(l.Dropped(), uint64(wantDropped))
			if tc.space < 0 {
				is.Equal(len(rec.recs), 0) // nothing to report
				is.Equal(l.WriteErrors(), uint64(0))
				return
			}
			is.Equal(len(rec.at(slog.LevelError)), 1)
			infos := rec.at(slog.LevelInfo)
			is.Equal(len(infos), 1) // one line when writes succeed again
			is.Equal(infos[0].Message, "log writes succeed again")
			is.Equal(attrOf(infos[0], "dropped"), strconv.Itoa(wantDropped))
		})
	}
}

// TestFileReportsEveryMinute checks the rate limit of the error lines: at
// most one per ReportInterval while writes keep failing, each with the
// records dropped since the last.
func TestFileReportsEveryMinute(t *testing.T) {
	is := is.New(t)
	disk := newFakeDisk(0)
	rec := &recorder{}
	clk := newClock()
	l := Open("-", Options{Stdout: disk, Logger: slog.New(rec), Name: "fail2ban",
		QueueBytes: 2 * recordLen, FlushInterval: time.Hour, Now: clk.Now})
	defer l.Close()
	type step struct {
		advance   time.Duration
		writes    int
		space     int
		wantError string // the message of a new error line, "" none
		wantDrop  string // its dropped attribute
		wantInfo  string // the message of a new info line, "" none
	}
	next := 0
	for i, s := range []step{
		{0, 1, 0, "log write failed: no space left on device; records are queued and retried", "", ""},
		{30 * time.Second, 1, 0, "", "", ""},
		{29 * time.Second, 3, 0, "", "", ""}, // 3 dropped: the queue holds 2
		{1 * time.Second, 1, 0, "log write still failing: no space left on device; records are queued and retried", "4", ""},
		{59 * time.Second, 2, 0, "", "", ""},
		{1 * time.Second, 0, 0, "log write still failing: no space left on device; records are queued and retried", "2", ""},
		{10 * time.Second, 0, -1, "", "", "log writes succeed again"},
		{2 * time.Minute, 1, -1, "", "", ""},
	} {
		errsBefore, infosBefore := len(rec.at(slog.LevelError)), len(rec.at(slog.LevelInfo))
		clk.Advance(s.advance)
		for range s.writes {
			l.Write([]byte(record(next)))
			next++
		}
		disk.setSpace(s.space)
		l.Flush()
		errs, infos := rec.at(slog.LevelError), rec.at(slog.LevelInfo)
		if s.wantError == "" {
			is.Equal(len(errs), errsBefore) // no new error line
		} else {
			is.Equal(len(errs), errsBefore+1)
			is.Equal(errs[len(errs)-1].Message, s.wantError)
			is.Equal(attrOf(errs[len(errs)-1], "dropped"), s.wantDrop)
		}
		if s.wantInfo == "" {
			is.Equal(len(infos), infosBefore)
		} else {
			is.Equal(len(infos), infosBefore+1)
			last := infos[len(infos)-1]
			is.Equal(last.Message, s.wantInfo)
			is.Equal(attrOf(last, "dropped"), "6")
			is.Equal(attrOf(last, "failed_for"), (2*time.Minute + 10*time.Second).String())
		}
		if t.Failed() {
			t.Fatalf("step %d", i)
		}
	}
	checkWhole(t, disk.String(), false)
	is.Equal(l.Dropped(), uint64(6))
}

// TestFileSetPathCut moves a File whose destination cut a record: to the
// same destination the record is completed; to another one, its rest is
// dropped (the old file ends with the cut, nothing glued to it) and the
// whole records that waited go to the new one.
func TestFileSetPathCut(t *testing.T) {
	for _, tc := range []struct {
		name      string
		same      bool
		wantOld   string
		wantNew   string
		wantDrops uint64
	}{
		{"same destination", true, record(0) + record(1) + record(2), "", 0},
		{"other destination", false, record(0) + record(1)[:20], record(2), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			disk := newFakeDisk(recordLen + 20)
			l := Open("-", Options{Stdout: disk, FlushInterval: time.Hour})
			defer l.Close()
			for _, r := range records(0, 3) {
				l.Write([]byte(r))
			}
			is.True(l.Flush() != nil) // cut inside record 1
			newPath := filepath.Join(t.TempDir(), "new.log")
			if tc.same {
				is.NoErr(l.SetPath("-")) // the old destination still takes nothing
			} else {
				is.NoErr(l.SetPath(newPath))
			}
			disk.setSpace(-1)
			is.NoErr(l.Flush())
			is.Equal(disk.String(), tc.wantOld)
			got, _ := os.ReadFile(newPath)
			is.Equal(string(got), tc.wantNew)
			is.Equal(l.Dropped(), tc.wantDrops)
			is.Equal(l.Queued(), 0)
		})
	}
}

// TestFileUnwritablePath opens a File in a directory that does not exist
// yet: it reports that once, queues (then drops and counts), keeps
// trying, and writes what it kept once the directory appears.
func TestFileUnwritablePath(t *testing.T) {
	for _, tc := range []struct {
		name  string
		retry time.Duration
		open  func(l *File, path string) error // nil: the retry opens it
	}{
		{"retry", 5 * time.Millisecond, nil},
		{"reopen", time.Hour, func(l *File, _ string) error { return l.Reopen() }},
		{"set path", time.Hour, func(l *File, path string) error { return l.SetPath(path) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			dir := filepath.Join(t.TempDir(), "log")
			path := filepath.Join(dir, "sessions.log")
			rec := &recorder{}
			l := Open(path, Options{Logger: slog.New(rec), Name: "sessions", QueueBytes: 4 * recordLen,
				FlushInterval: 2 * time.Millisecond, RetryInterval: tc.retry})
			defer l.Close()
			is.True(l.Enabled()) // lines are wanted: they wait for the file
			is.Equal(l.Path(), path)
			for _, r := range records(0, 6) {
				n, err := l.Write([]byte(r))
				is.NoErr(err)
				is.Equal(n, len(r))
			}
			is.Equal(l.Queued(), 4)
			is.Equal(l.Dropped(), uint64(2))
			if tc.open == nil {
				testutil.WaitFor(t, "retries", func() bool { return l.WriteErrors() >= 3 })
			} else {
				is.True(tc.open(l, path) != nil) // still missing: an error, and still waiting
				is.Equal(l.Path(), path)
			}
			errs := rec.at(slog.LevelError)
			is.Equal(len(errs), 1) // reported once, however often retried
			is.True(strings.HasPrefix(errs[0].Message, "open log failed: no such file or directory; records are queued"))
			is.Equal(attrOf(errs[0], "path"), path)

			is.NoErr(os.Mkdir(dir, 0o755))
			if tc.open != nil {
				is.NoErr(tc.open(l, path))
			}
			testutil.WaitFor(t, "the file to be written", func() bool { return l.Queued() == 0 })
			l.Write([]byte(record(6)))
			is.NoErr(l.Flush())
			got, err := os.ReadFile(path)
			is.NoErr(err)
			is.Equal(string(got), strings.Join(records(0, 4), "")+record(6))
			infos := rec.at(slog.LevelInfo)
			is.Equal(len(infos), 1)
			is.Equal(infos[0].Message, "log file opened")
			is.Equal(attrOf(infos[0], "dropped"), "2")
		})
	}
}

// TestFileSetPathWhileWaiting: a File that waits for a path it cannot
// open and is pointed at another one it cannot open either waits for the
// new one, and reports it.
func TestFileSetPathWhileWaiting(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	rec := &recorder{}
	bad1, bad2 := filepath.Join(dir, "a", "x.log"), filepath.Join(dir, "b", "x.log")
	l := Open(bad1, Options{Logger: slog.New(rec), RetryInterval: time.Hour})
	defer l.Close()
	is.True(l.SetPath(bad2) != nil)
	is.Equal(l.Path(), bad2)
	is.Equal(len(rec.at(slog.LevelError)), 2) // one line per path
	is.NoErr(l.SetPath(""))                   // off: nothing waits any more
	is.True(!l.Enabled())
	l.Write([]byte(record(0)))
	is.Equal(l.Queued(), 0)
}

// TestFileClose: Close writes what it can, drops and counts the rest,
// and says so; writes after Close are discarded.
func TestFileClose(t *testing.T) {
	is := is.New(t)
	disk := newFakeDisk(recordLen)
	l := Open("-", Options{Stdout: disk, FlushInterval: time.Hour})
	for _, r := range records(0, 3) {
		l.Write([]byte(r))
	}
	err := l.Close()
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "2 records could not be written"))
	is.Equal(l.Dropped(), uint64(2))
	is.Equal(disk.String(), record(0))
	n, err := l.Write([]byte(record(3)))
	is.NoErr(err)
	is.Equal(n, recordLen)
	is.True(!l.Enabled())
	is.True(errors.Is(l.SetPath("-"), ErrClosed))
	is.NoErr(l.Close()) // twice is fine
}

// TestBufferedFailures: the process log rides out a full disk like File
// (counting, never reporting) and drops silently on a broken pipe.
func TestBufferedFailures(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		space       int
		wantDropped uint64
		wantOut     string
	}{
		{"full disk", syscall.ENOSPC, recordLen + 10, 0, strings.Join(records(0, 4), "")},
		{"broken pipe", syscall.EPIPE, recordLen, 2, record(0) + record(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			disk := newFakeDisk(tc.space)
			disk.err = tc.err
			b := NewBuffered(disk)
			defer b.Close()
			for _, r := range records(0, 3) {
				n, err := b.Write([]byte(r))
				is.NoErr(err)
				is.Equal(n, recordLen)
			}
			is.True(b.Flush() != nil)
			is.Equal(b.WriteErrors(), uint64(1))
			is.Equal(b.Dropped(), tc.wantDropped)
			disk.setSpace(-1)
			b.Write([]byte(record(3)))
			is.NoErr(b.Flush())
			is.Equal(disk.String(), tc.wantOut)
		})
	}
}

// TestBufferedOverflow: a Buffered whose writer keeps failing holds
// DefaultQueueBytes, then drops whole records and counts them.
func TestBufferedOverflow(t *testing.T) {
	is := is.New(t)
	disk := newFakeDisk(0)
	b := NewBuffered(disk)
	line := []byte(strings.Repeat("y", 1023) + "\n")
	for range DefaultQueueBytes/len(line) + 10 {
		b.Write(line)
	}
	is.Equal(b.Dropped(), uint64(10)) // 64 KiB were tried at once and failed; the rest waited for the ticks
	disk.setSpace(-1)
	is.NoErr(b.Flush())
	is.Equal(len(disk.String()), DefaultQueueBytes)
	is.NoErr(b.Close())
	b.Write([]byte("after close\n")) // written at once
	is.True(strings.HasSuffix(disk.String(), "after close\n"))
}

var _ io.Writer = (*fakeDisk)(nil)

// TestFileSetPathBadKeepsOld: a reload that names a path that cannot be
// opened leaves a working log where it is: the error is returned (the
// caller reports it) and counted, and records keep going to the old file.
func TestFileSetPathBadKeepsOld(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.log"), filepath.Join(dir, "missing", "bad.log")
	rec := &recorder{}
	l := Open(good, Options{Logger: slog.New(rec), FlushInterval: time.Hour, RetryInterval: time.Millisecond})
	defer l.Close()
	l.Write([]byte(record(0)))
	err := l.SetPath(bad)
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), bad))
	is.Equal(l.Path(), good)
	is.Equal(l.WriteErrors(), uint64(1))
	is.Equal(len(rec.recs), 0) // the caller reports what SetPath returns
	l.Write([]byte(record(1)))
	is.NoErr(l.Flush())
	got, err := os.ReadFile(good)
	is.NoErr(err)
	is.Equal(string(got), record(0)+record(1))
	is.Equal(l.Dropped(), uint64(0))
}
