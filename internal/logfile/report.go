package logfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"
)

// ReportInterval is the least time between two lines saying that writes
// to a log file still fail.
const ReportInterval = time.Minute

// report is one line for the File's logger. Reports are made while the
// File is locked and logged after it is unlocked, so a logger that writes
// to the File itself cannot deadlock.
type report struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
}

func emit(log *slog.Logger, rs []report) {
	if log == nil {
		return
	}
	for _, r := range rs {
		log.LogAttrs(context.Background(), r.level, r.msg, r.attrs...)
	}
}

// outage is a File's current failure: its destination cannot be opened
// or written. The zero value is no failure.
type outage struct {
	kind     outageKind
	path     string // the path that failed
	since    time.Time
	lastLine time.Time
	// the counters when the outage began and at its last line
	droppedAtStart, errorsAtStart, droppedAtLine uint64
}

type outageKind int

const (
	noOutage outageKind = iota
	openOutage
	writeOutage
)

// cause is the reason err gives without the path it names (the path is an
// attribute of the line).
func cause(err error) string { return bare(err).Error() }

// bare returns the error a *fs.PathError carries (the errno), for a
// message that names the path itself; any other error is returned as is.
func bare(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

func (l *File) begin(kind outageKind, now time.Time) {
	d, e := l.dropped.Load(), l.writeErrors.Load()
	l.out = outage{kind: kind, path: l.path, since: now, lastLine: now,
		droppedAtStart: d, errorsAtStart: e, droppedAtLine: d}
}

// writeFailed notes a failed write: one line when writes start failing,
// then at most one every ReportInterval while they keep failing.
func (l *File) writeFailed(err error, now time.Time) []report {
	l.writeErrors.Add(1)
	if l.out.kind != writeOutage {
		l.begin(writeOutage, now)
		return []report{{slog.LevelError,
			fmt.Sprintf("log write failed: %s; records are queued and retried", cause(err)),
			[]slog.Attr{slog.String("log", l.name), slog.String("path", l.path), slog.Int("queued", l.q.records)}}}
	}
	if now.Sub(l.out.lastLine) < ReportInterval {
		return nil
	}
	d := l.dropped.Load()
	since := d - l.out.droppedAtLine
	l.out.lastLine, l.out.droppedAtLine = now, d
	return []report{{slog.LevelError,
		fmt.Sprintf("log write still failing: %s; records are queued and retried", cause(err)),
		[]slog.Attr{slog.String("log", l.name), slog.String("path", l.path), slog.Int("queued", l.q.records),
			slog.Uint64("dropped", since), slog.Duration("failing_for", now.Sub(l.out.since))}}}
}

// openFailed notes that the destination could not be opened: one line
// for each path that fails, however often it is retried.
func (l *File) openFailed(err error, now time.Time) []report {
	l.writeErrors.Add(1)
	if l.out.kind == openOutage && l.out.path == l.path {
		return nil
	}
	l.begin(openOutage, now)
	return []report{{slog.LevelError,
		fmt.Sprintf("open log failed: %s; records are queued and the open retried every %s", cause(err), l.retry),
		[]slog.Attr{slog.String("log", l.name), slog.String("path", l.path)}}}
}

// succeeded ends an outage, if there is one, with one line that gives the
// totals.
func (l *File) succeeded(now time.Time) []report {
	if l.out.kind == noOutage {
		return nil
	}
	msg := "log writes succeed again"
	if l.out.kind == openOutage {
		msg = "log file opened"
	}
	d, e := l.dropped.Load(), l.writeErrors.Load()
	r := report{slog.LevelInfo, msg, []slog.Attr{slog.String("log", l.name), slog.String("path", l.path),
		slog.Duration("failed_for", now.Sub(l.out.since)),
		slog.Uint64("dropped", d-l.out.droppedAtStart), slog.Uint64("errors", e-l.out.errorsAtStart),
		slog.Uint64("dropped_total", d), slog.Uint64("errors_total", e)}}
	l.out = outage{}
	return []report{r}
}
