package logfile

import (
	"bytes"
	"io"
)

// DefaultQueueBytes bounds the lines a File or a Buffered keeps while its
// destination cannot be written (a full disk, a log directory that does
// not exist yet): 1 MiB per file, some 3,000 session-log records. Past it
// a new record is dropped whole and counted.
const DefaultQueueBytes = 1 << 20

// flushBytes is how much may wait in the queue before Write writes it out
// at once instead of leaving it to the next tick, as bufio.Writer's 64 KiB
// buffer did: a burst costs one system call per 64 KiB, not one per line.
const flushBytes = 64 << 10

// keepBytes is the largest buffer an empty queue keeps; a larger one,
// grown during an outage, is given back to the garbage collector.
const keepBytes = 4 * flushBytes

// lineQueue holds whole lines waiting to be written, in order. A write
// that stopped in the middle of a line (n < len) is resumed from byte n,
// so the line is completed before the next one starts and two records are
// never glued together. It is not safe for concurrent use.
type lineQueue struct {
	buf     []byte // buf[head:] waits to be written
	head    int
	records int  // records waiting, a cut one included
	cut     bool // buf[head:] starts inside a record whose start was written
	limit   int  // most bytes waiting
}

// size returns how many bytes wait.
func (q *lineQueue) size() int { return len(q.buf) - q.head }

// push queues p as one record, adding the newline it lacks, and reports
// false (queueing nothing) when that would pass the limit. An empty p is
// no record.
func (q *lineQueue) push(p []byte) bool {
	n := len(p)
	if n == 0 {
		return true
	}
	bare := p[n-1] != '\n'
	if bare {
		n++
	}
	if q.size()+n > q.limit {
		return false
	}
	if q.head > 0 && len(q.buf)+n > cap(q.buf) {
		// Move what waits to the front rather than grow the buffer.
		m := copy(q.buf, q.buf[q.head:])
		q.buf, q.head = q.buf[:m], 0
	}
	q.buf = append(q.buf, p...)
	if bare {
		q.buf = append(q.buf, '\n')
	}
	q.records++
	return true
}

// writeTo writes what waits to w and returns the records that were
// completed. What w did not take stays queued, from the first byte it did
// not write.
func (q *lineQueue) writeTo(w io.Writer) (int, error) {
	return q.writePart(w, q.size())
}

// writeBlocks writes out whole flushBytes blocks of what waits, as
// bufio.Writer did (page-aligned writes are the cheapest), and keeps the
// rest, the end of a record included, for the next write.
func (q *lineQueue) writeBlocks(w io.Writer) (int, error) {
	return q.writePart(w, q.size()/flushBytes*flushBytes)
}

// writePart writes the first size bytes of what waits to w and returns
// the records that were completed.
func (q *lineQueue) writePart(w io.Writer, size int) (int, error) {
	if size == 0 {
		return 0, nil
	}
	part := q.buf[q.head : q.head+size]
	n, err := w.Write(part)
	n = max(0, min(n, len(part)))
	if err == nil && n < len(part) {
		err = io.ErrShortWrite
	}
	q.head += n
	if q.head == len(q.buf) { // all written: no need to count
		done := q.records
		q.reset()
		return done, err
	}
	// Count the newlines of the smaller side: after a block write that is
	// the short rest that waits.
	var done int
	if rest := q.buf[q.head:]; len(rest) < n {
		done = q.records - bytes.Count(rest, []byte{'\n'})
	} else {
		done = bytes.Count(part[:n], []byte{'\n'})
	}
	q.records -= done
	if n > 0 {
		q.cut = part[n-1] != '\n'
	}
	return done, err
}

// dropCut drops the unwritten rest of a cut record, for a destination
// that will not get it, and reports whether there was one.
func (q *lineQueue) dropCut() bool {
	if !q.cut {
		return false
	}
	end := bytes.IndexByte(q.buf[q.head:], '\n') // every queued record ends in one
	q.head += end + 1
	q.records--
	q.cut = false
	if q.head == len(q.buf) {
		q.reset()
	}
	return true
}

// discard drops everything queued and returns how many records that was.
func (q *lineQueue) discard() int {
	n := q.records
	q.reset()
	return n
}

func (q *lineQueue) reset() {
	if cap(q.buf) > keepBytes {
		q.buf = nil
	} else {
		q.buf = q.buf[:0]
	}
	q.head, q.records, q.cut = 0, 0, false
}
