package logfile

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// fakeDisk is a destination with a byte budget: it accepts that many
// bytes, then fails with ENOSPC (wrapped in *os.PathError, as os.File
// does) after taking what still fits, until its budget is raised. A
// budget below zero is no limit. err, when set, replaces ENOSPC.
type fakeDisk struct {
	mu    sync.Mutex
	out   bytes.Buffer
	space int
	err   error
}

func newFakeDisk(space int) *fakeDisk { return &fakeDisk{space: space} }

func (d *fakeDisk) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.space < 0 {
		return d.out.Write(p)
	}
	n := min(len(p), d.space)
	d.out.Write(p[:n])
	d.space -= n
	if n < len(p) {
		err := d.err
		if err == nil {
			err = syscall.ENOSPC
		}
		return n, &os.PathError{Op: "write", Path: "/var/log/fake.log", Err: err}
	}
	return n, nil
}

func (d *fakeDisk) setSpace(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.space = n
}

func (d *fakeDisk) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

// recorder is a slog handler that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// at returns the records of one level.
func (r *recorder) at(level slog.Level) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.recs {
		if rec.Level == level {
			out = append(out, rec)
		}
	}
	return out
}

// attrOf returns the value of one attribute of rec ("" when missing).
func attrOf(rec slog.Record, key string) string {
	var v string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// clock is a test clock that moves when told.
type clock = testutil.Clock

func newClock() *clock { return testutil.NewClock(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)) }

// record returns the test record number i: one line of 53 bytes.
func record(i int) string {
	return fmt.Sprintf("record %04d %s\n", i, strings.Repeat("x", 40))
}

const recordLen = 53

// records returns records from..to-1.
func records(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, record(i))
	}
	return out
}

// checkWhole fails unless text is only whole test records in strictly
// rising order, with at most the start of the next one at the very end
// when cutOK, and returns the numbers of the whole ones.
func checkWhole(t *testing.T, text string, cutOK bool) []int {
	t.Helper()
	lines := strings.SplitAfter(text, "\n")
	last := lines[len(lines)-1] // "" when text ends in a newline
	var nums []int
	prev := -1
	for _, l := range lines[:len(lines)-1] {
		var n int
		if _, err := fmt.Sscanf(l, "record %d ", &n); err != nil || l != record(n) {
			t.Fatalf("not a whole record (glued or cut): %q", l)
		}
		if n <= prev {
			t.Fatalf("record %d after record %d", n, prev)
		}
		nums = append(nums, n)
		prev = n
	}
	if last != "" {
		if !cutOK {
			t.Fatalf("a cut record at the end once writes succeed: %q", last)
		}
		if !strings.HasPrefix(record(prev+1), last) {
			t.Fatalf("the cut end %q is not the start of record %d", last, prev+1)
		}
	}
	return nums
}
