package sessionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// fullDisk takes space bytes, then fails with ENOSPC (after taking what
// still fits) until space is set below zero (no limit).
type fullDisk struct {
	mu    sync.Mutex
	out   bytes.Buffer
	space int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.space < 0 {
		return d.out.Write(p)
	}
	n := min(len(p), d.space)
	d.out.Write(p[:n])
	d.space -= n
	if n < len(p) {
		return n, &os.PathError{Op: "write", Path: "/var/log/sessions.log", Err: syscall.ENOSPC}
	}
	return n, nil
}

func (d *fullDisk) set(space int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.space = space
}

func (d *fullDisk) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

// levels counts the log lines it is given, per level.
type levels struct {
	mu sync.Mutex
	n  map[slog.Level]int
}

func (h *levels) Enabled(context.Context, slog.Level) bool { return true }
func (h *levels) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *levels) WithGroup(string) slog.Handler            { return h }
func (h *levels) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Level]++
	return nil
}

func (h *levels) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[l]
}

// TestFullDisk: on a full disk the session log makes one error line for
// the whole failure, not one per record (the observer and the file share
// the process logger, as in serve), and once space returns every record
// is there, whole, in order.
func TestFullDisk(t *testing.T) {
	is := is.New(t)
	disk := &fullDisk{space: 100} // the first record is cut
	h := &levels{n: map[slog.Level]int{}}
	log := slog.New(h)
	out := logfile.Open("-", logfile.Options{Stdout: disk, Logger: log, Name: "sessions", FlushInterval: time.Hour})
	defer out.Close()
	cfg, err := rules.Parse("", "")
	is.NoErr(err)
	e := rules.NewEngine(cfg, rules.EngineOptions{Observer: New(out, log)})
	ctx := context.Background()
	const messages = 20
	for i := range messages {
		s := rules.NewSession(netip.MustParseAddr("192.0.2.7"), "")
		s.ID = "Q" + strings.Repeat("x", i)
		e.Mail(ctx, s, "a@example.com")
		e.Rcpt(ctx, s, "b@domino.test")
		e.EndMessage(s)
		out.Flush() // fails: the disk is full
	}
	is.Equal(h.count(slog.LevelError), 1) // one line for twenty failed records
	is.True(out.WriteErrors() >= messages)
	is.Equal(out.Dropped(), uint64(0))

	disk.set(-1)
	is.NoErr(out.Flush())
	is.Equal(h.count(slog.LevelError), 1)
	is.Equal(h.count(slog.LevelInfo), 1) // writes succeed again
	lines := strings.Split(strings.TrimSuffix(disk.String(), "\n"), "\n")
	is.Equal(len(lines), messages)
	for i, line := range lines {
		var r rules.MessageRecord
		is.NoErr(json.Unmarshal([]byte(line), &r)) // whole, nothing glued
		is.Equal(r.Session, "Q"+strings.Repeat("x", i))
	}
}
