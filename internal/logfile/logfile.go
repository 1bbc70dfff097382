// Package logfile is an append-only log file that can be reopened (after
// logrotate moved it, on SIGUSR1) and pointed elsewhere (on a
// configuration reload) while writers keep writing.
package logfile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// File is a log destination: a file opened for appending, standard
// output ("-"), or nothing (""). It is safe for concurrent use; each Write
// is one whole line. Lines are buffered and written out within
// FlushInterval, so a busy server does not pay a system call per line.
type File struct {
	mu     sync.Mutex
	path   string
	w      io.Writer
	buf    *bufio.Writer // over w; nil when off
	f      *os.File      // nil for stdout or when off
	stdout io.Writer
	stop   chan struct{}
	done   chan struct{}
}

// New returns a File writing to path ("" off, "-" stdout); stdout is what
// "-" means (os.Stdout when nil). Close it to stop its flusher.
func New(path string, stdout io.Writer) (*File, error) {
	if stdout == nil {
		stdout = os.Stdout
	}
	l := &File{stdout: stdout, stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.SetPath(path); err != nil {
		return nil, err
	}
	go l.flusher()
	return l, nil
}

func (l *File) flusher() {
	defer close(l.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Flush()
		}
	}
}

// Flush writes out the buffered lines.
func (l *File) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf == nil {
		return nil
	}
	return l.buf.Flush()
}

// Enabled reports whether the file writes anywhere.
func (l *File) Enabled() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w != nil
}

// Path returns the current destination.
func (l *File) Path() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.path
}

// SetPath points the file at path, opening it before closing the old one;
// on error the old destination stays.
func (l *File) SetPath(path string) error {
	w, f, err := l.open(path)
	if err != nil {
		return err
	}
	var buf *bufio.Writer
	if w != nil {
		buf = bufio.NewWriterSize(w, 64<<10)
	}
	l.mu.Lock()
	if l.buf != nil {
		l.buf.Flush() // the old destination gets its lines
	}
	old := l.f
	l.path, l.w, l.f, l.buf = path, w, f, buf
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Reopen opens the current path again: after logrotate renamed the file,
// new lines go to a new file of the old name.
func (l *File) Reopen() error {
	return l.SetPath(l.Path())
}

func (l *File) open(path string) (io.Writer, *os.File, error) {
	switch path {
	case "":
		return nil, nil, nil
	case "-":
		return l.stdout, nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, f, nil
}

// Write writes p (one line) if the file is enabled.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf == nil {
		return len(p), nil
	}
	return l.buf.Write(p)
}

// Close flushes and closes the file and stops the flusher.
func (l *File) Close() error {
	select {
	case <-l.stop:
	default:
		close(l.stop)
		<-l.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf != nil {
		l.buf.Flush()
	}
	f := l.f
	l.w, l.f, l.buf = nil, nil, nil
	if f != nil {
		return f.Close()
	}
	return nil
}
