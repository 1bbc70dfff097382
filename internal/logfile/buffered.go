package logfile

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// FlushInterval is how long a buffered log line may wait before it is
// written out.
const FlushInterval = 200 * time.Millisecond

// Buffered collects log lines and writes them out at most every
// FlushInterval (or when its buffer fills), so that a busy server does
// not pay a system call per line. Close flushes what is left. It is safe
// for concurrent use.
type Buffered struct {
	mu    sync.Mutex
	w     *bufio.Writer
	armed bool
	stop  chan struct{}
	done  chan struct{}
}

// NewBuffered returns a buffered writer over w and starts its flusher.
func NewBuffered(w io.Writer) *Buffered {
	b := &Buffered{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flusher()
	return b
}

// Write buffers p.
func (b *Buffered) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = true
	return b.w.Write(p)
}

// Flush writes out what is buffered.
func (b *Buffered) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	return b.w.Flush()
}

func (b *Buffered) flusher() {
	defer close(b.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.mu.Lock()
			if b.armed {
				b.armed = false
				b.w.Flush()
			}
			b.mu.Unlock()
		}
	}
}

// Close stops the flusher and flushes what is left.
func (b *Buffered) Close() error {
	close(b.stop)
	<-b.done
	return b.Flush()
}
