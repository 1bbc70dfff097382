package logfile

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffered collects log lines (one per Write) and writes them out at most
// every FlushInterval, or at once when 64 KiB wait, so that a busy server
// does not pay a system call per line. It is the process log, over
// stderr: it has nowhere to report its own failures, so it only counts
// them. Like File, a failed write leaves the unwritten lines queued (up
// to DefaultQueueBytes, then new records are dropped and counted) and the
// next tick tries again, completing a cut line first; a broken pipe
// (EPIPE: the reader is gone for good) drops what waits. Close flushes
// what is left. It is safe for concurrent use.
type Buffered struct {
	mu      sync.Mutex
	w       io.Writer
	q       lineQueue
	failing bool // the last write failed: leave retries to the ticks
	closed  bool // after Close each line is written at once

	dropped, writeErrors atomic.Uint64

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// NewBuffered returns a buffered writer over w and starts its flusher.
func NewBuffered(w io.Writer) *Buffered {
	b := &Buffered{w: w, stop: make(chan struct{}), done: make(chan struct{})}
	b.q.limit = DefaultQueueBytes
	go b.flusher()
	return b
}

// Write queues p, one line. It never fails: a line the queue cannot hold
// is dropped and counted.
func (b *Buffered) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.q.push(p) {
		b.dropped.Add(1)
		return len(p), nil
	}
	switch {
	case b.closed:
		b.flushLocked()
	case !b.failing && b.q.size() >= flushBytes:
		if _, err := b.q.writeBlocks(b.w); err != nil {
			b.failed(err)
		}
	}
	return len(p), nil
}

// Flush writes out what is queued, as far as the writer takes it, and
// returns the write error if there was one.
func (b *Buffered) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *Buffered) flushLocked() error {
	if b.q.size() == 0 {
		return nil
	}
	_, err := b.q.writeTo(b.w)
	b.failing = err != nil
	if err != nil {
		b.failed(err)
	}
	return err
}

// failed counts a failed write; a broken pipe drops what waits, as no
// reader will ever take it.
func (b *Buffered) failed(err error) {
	b.failing = true
	b.writeErrors.Add(1)
	if errors.Is(err, syscall.EPIPE) {
		b.dropped.Add(uint64(b.q.discard()))
	}
}

// Dropped returns how many records were lost: dropped whole because the
// queue was full, or queued when the writer's pipe broke or at Close.
func (b *Buffered) Dropped() uint64 { return b.dropped.Load() }

// WriteErrors returns how many writes failed.
func (b *Buffered) WriteErrors() uint64 { return b.writeErrors.Load() }

func (b *Buffered) flusher() {
	defer close(b.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.Flush()
		}
	}
}

// Close stops the flusher and writes out what is left; records that
// could not be written are dropped, counted, and reported in the error.
// Lines written after Close go out at once.
func (b *Buffered) Close() error {
	b.stopOnce.Do(func() {
		close(b.stop)
		<-b.done
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	err := b.flushLocked()
	if n := b.q.discard(); n > 0 {
		b.dropped.Add(uint64(n))
		return fmt.Errorf("process log: %d records could not be written: %w", n, err)
	}
	return err
}
