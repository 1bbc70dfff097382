// Package logfile is an append-only log file that can be reopened (after
// logrotate moved it, on SIGUSR1) and pointed elsewhere (on a
// configuration reload) while writers keep writing, and that rides out a
// full disk or a missing directory without losing its lines' shape.
//
// Each Write is one whole line. Lines wait in a bounded queue
// (DefaultQueueBytes) and are written out within FlushInterval, so a busy
// server does not pay a system call per line. When a write fails (no
// space left on device) the unwritten lines stay queued and every flush
// tries again; a line that a full disk cut in the middle is completed when
// space returns, before the next line starts, so the file only ever holds
// whole lines once writes succeed. When the queue is full a new record is
// dropped whole and counted (Dropped). Write never returns an error for a
// queued or dropped line: the failure is counted (WriteErrors) and
// reported through the File's logger, rate-limited, so callers must not
// log it per record.
package logfile

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// FlushInterval is how long a buffered log line may wait before it is
// written out, and how often a failed write is tried again.
const FlushInterval = 200 * time.Millisecond

// DefaultRetryInterval is how often a File tries again to open a
// destination that could not be opened.
const DefaultRetryInterval = 10 * time.Second

// ErrClosed is returned by SetPath and Reopen after Close.
var ErrClosed = errors.New("log file closed")

// Options are what Open builds a File with; the zero value is usable.
type Options struct {
	// Stdout is what the path "-" means; os.Stdout when nil.
	Stdout io.Writer
	// Logger receives the File's own failures, rate-limited: one line
	// when writes start failing, at most one per ReportInterval while
	// they keep failing, one when they succeed again. Nil: counted only.
	Logger *slog.Logger
	// Name is the log's name in those lines ("sessions", "fail2ban").
	Name string
	// QueueBytes bounds the lines kept while the destination cannot be
	// written; DefaultQueueBytes when 0.
	QueueBytes int
	// FlushInterval is how often queued lines are written out and failed
	// writes tried again; FlushInterval when 0.
	FlushInterval time.Duration
	// RetryInterval is how often a destination that could not be opened
	// is tried again; DefaultRetryInterval when 0.
	RetryInterval time.Duration
	// Now is the clock of rate limiting and open retries; time.Now when nil.
	Now func() time.Time
}

// File is a log destination: a file opened for appending, standard
// output ("-"), or nothing (""). It is safe for concurrent use; each Write
// is one whole line (a missing final newline is added).
type File struct {
	mu       sync.Mutex
	path     string
	w        io.Writer // nil when off, closed or not open yet
	f        *os.File  // nil for stdout, off, closed or not open yet
	q        lineQueue
	out      outage
	nextOpen time.Time // when a destination not open yet is tried again
	closed   bool

	name     string
	log      *slog.Logger
	stdout   io.Writer
	interval time.Duration
	retry    time.Duration
	now      func() time.Time

	dropped, writeErrors atomic.Uint64

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// Open returns a File writing to path ("" off, "-" stdout) and starts its
// flusher; Close it to stop. It never fails: when path cannot be opened
// the error is reported once through o.Logger, lines are queued (up to
// the queue's bound, then dropped and counted), and the open is tried
// again every RetryInterval and on Reopen and SetPath.
func Open(path string, o Options) *File {
	l := newFile(o)
	l.path = path
	l.retryOpen()
	go l.flusher()
	return l
}

// New returns a File writing to path ("" off, "-" stdout), with stdout
// what "-" means (os.Stdout when nil), and starts its flusher; Close it
// to stop. It is Open with no logger, for a caller that reports the open
// error itself: the File it returns is usable even when err is not nil.
// It then waits for path as Open's does, queueing lines and trying the
// open again every DefaultRetryInterval and on Reopen and SetPath; its
// failures and its recovery are only counted.
func New(path string, stdout io.Writer) (*File, error) {
	l := newFile(Options{Stdout: stdout})
	l.path = path
	err := l.retryOpen()
	go l.flusher()
	return l, err
}

func newFile(o Options) *File {
	l := &File{name: o.Name, log: o.Logger, stdout: o.Stdout, interval: o.FlushInterval,
		retry: o.RetryInterval, now: o.Now, stop: make(chan struct{}), done: make(chan struct{})}
	l.q.limit = o.QueueBytes
	if l.q.limit <= 0 {
		l.q.limit = DefaultQueueBytes
	}
	if l.stdout == nil {
		l.stdout = os.Stdout
	}
	if l.interval <= 0 {
		l.interval = FlushInterval
	}
	if l.retry <= 0 {
		l.retry = DefaultRetryInterval
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l
}

func (l *File) flusher() {
	defer close(l.done)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.retryOpen()
			l.Flush()
		}
	}
}

// waiting reports whether the File has a destination it could not open
// yet. l.mu is held.
func (l *File) waiting() bool {
	return !l.closed && l.path != "" && l.w == nil
}

// retryOpen opens a destination not open yet, when its retry is due, and
// returns the open error if there was one.
func (l *File) retryOpen() error {
	l.mu.Lock()
	if !l.waiting() || l.now().Before(l.nextOpen) {
		l.mu.Unlock()
		return nil
	}
	path := l.path
	l.mu.Unlock()
	w, f, err := openPath(path, l.stdout)
	l.mu.Lock()
	if !l.waiting() || l.path != path { // SetPath or Close came first
		l.mu.Unlock()
		if f != nil {
			f.Close()
		}
		return nil
	}
	now := l.now()
	var rs []report
	if err != nil {
		l.nextOpen = now.Add(l.retry)
		rs = l.openFailed(err, now)
	} else {
		l.w, l.f = w, f
		rs = l.succeeded(now)
		more, _ := l.flushLocked(now)
		rs = append(rs, more...)
	}
	l.mu.Unlock()
	emit(l.log, rs)
	return err
}

// Flush writes out the queued lines, as far as the destination takes
// them, and returns the write error if there was one; what was not
// written stays queued.
func (l *File) Flush() error {
	l.mu.Lock()
	rs, err := l.flushLocked(l.now())
	l.mu.Unlock()
	emit(l.log, rs)
	return err
}

func (l *File) flushLocked(now time.Time) ([]report, error) {
	if l.w == nil || l.q.size() == 0 {
		return nil, nil
	}
	if _, err := l.q.writeTo(l.w); err != nil {
		return l.writeFailed(err, now), err
	}
	if l.out.kind == writeOutage {
		return l.succeeded(now), nil
	}
	return nil, nil
}

// Enabled reports whether the file writes anywhere (or will, once its
// destination opens).
func (l *File) Enabled() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.closed && l.path != ""
}

// Path returns the current destination.
func (l *File) Path() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.path
}

// Dropped returns how many records were lost: dropped whole because the
// queue was full, or still queued when the destination was turned off,
// changed in the middle of a record, or closed.
func (l *File) Dropped() uint64 { return l.dropped.Load() }

// WriteErrors returns how many writes and opens failed: a destination
// that fails a write is tried again every FlushInterval, one that cannot
// be opened every RetryInterval, and each failed try counts.
func (l *File) WriteErrors() uint64 { return l.writeErrors.Load() }

// Queued returns how many records wait to be written.
func (l *File) Queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.q.records
}

// SetPath points the file at path (a reload), opening it before leaving
// the old destination, which gets what it can still take of the queued
// lines; the rest go to the new one. When path cannot be opened SetPath
// counts and returns the error and the old destination stays, as it
// always did: a bad path in a reload does not stop a log that works, and
// the next SetPath tries again. A File with no open destination (waiting
// for one, see Open) has nothing to keep: it takes the new path anyway
// and waits for it, trying it every RetryInterval and on Reopen, and
// reports it once through its logger.
func (l *File) SetPath(path string) error {
	w, f, err := openPath(path, l.stdout)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		if f != nil {
			f.Close()
		}
		return fmt.Errorf("log %s: %w", path, ErrClosed)
	}
	now := l.now()
	if err != nil {
		var rs []report
		if l.waiting() {
			l.path, l.nextOpen = path, now.Add(l.retry)
			rs = l.openFailed(err, now)
		} else {
			l.writeErrors.Add(1)
		}
		l.mu.Unlock()
		emit(l.log, rs)
		return err
	}
	rs := l.leave(path, f, now)
	old := l.f
	l.path, l.w, l.f = path, w, f
	switch {
	case w == nil: // off: what waits has nowhere to go
		l.dropped.Add(uint64(l.q.discard()))
		l.out = outage{}
	case l.out.kind == openOutage:
		rs = append(rs, l.succeeded(now)...)
	}
	more, _ := l.flushLocked(now)
	rs = append(rs, more...)
	l.mu.Unlock()
	if old != nil && old != f {
		old.Close()
	}
	emit(l.log, rs)
	return nil
}

// leave gives the old destination what it can still take before the File
// moves to path (opened as f). The rest of a record it cut goes to the
// new destination only if that is the same file; otherwise it is dropped,
// so no record is ever glued to the middle of another. l.mu is held.
func (l *File) leave(path string, f *os.File, now time.Time) []report {
	if l.w == nil {
		return nil
	}
	rs, _ := l.flushLocked(now)
	if l.q.cut && !sameDestination(l.path, l.f, path, f) && l.q.dropCut() {
		l.dropped.Add(1)
	}
	return rs
}

// sameDestination reports whether two opened destinations are one.
func sameDestination(p1 string, f1 *os.File, p2 string, f2 *os.File) bool {
	if f1 == nil || f2 == nil {
		return p1 == "-" && p2 == "-"
	}
	s1, err1 := f1.Stat()
	s2, err2 := f2.Stat()
	return err1 == nil && err2 == nil && os.SameFile(s1, s2)
}

// Reopen opens the current path again: after logrotate renamed the file,
// new lines go to a new file of the old name. A destination that could
// not be opened is tried at once.
func (l *File) Reopen() error {
	return l.SetPath(l.Path())
}

// Write queues p, one line, if the file is enabled. It never fails: a
// line the queue cannot hold is dropped and counted.
func (l *File) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	l.mu.Lock()
	if l.closed || l.path == "" {
		l.mu.Unlock()
		return len(p), nil
	}
	if !l.q.push(p) {
		l.mu.Unlock()
		l.dropped.Add(1)
		return len(p), nil
	}
	var rs []report
	if l.w != nil && l.out.kind == noOutage && l.q.size() >= flushBytes {
		if _, err := l.q.writeBlocks(l.w); err != nil {
			rs = l.writeFailed(err, l.now())
		}
	}
	l.mu.Unlock()
	emit(l.log, rs)
	return len(p), nil
}

// Close stops the flusher, writes out what the destination takes and
// closes it; records that could not be written are dropped, counted, and
// reported in the error. Writes after Close are discarded.
func (l *File) Close() error {
	l.stopOnce.Do(func() {
		close(l.stop)
		<-l.done
	})
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	rs, _ := l.flushLocked(l.now())
	path := l.path
	var err error
	if n := l.q.discard(); n > 0 {
		l.dropped.Add(uint64(n))
		err = fmt.Errorf("close log %s: %d records could not be written", path, n)
	}
	f := l.f
	l.w, l.f = nil, nil
	l.mu.Unlock()
	emit(l.log, rs)
	if f != nil {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close log %s: %w", path, cerr)
		}
	}
	return err
}
