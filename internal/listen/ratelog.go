package listen

import (
	"sync"
	"time"
)

// logInterval is the least time between two log lines of one kind on one
// listener: a flood of accept errors or refused connections writes one
// line per interval, with the count since the previous line, so it cannot
// fill the disk or slow the server down.
const logInterval = 10 * time.Second

// rateLog writes the log lines of one repeated event: the first at once,
// then at most one per interval, each standing for the events since the
// line before (it carries the last of them and their count). The events
// held back at the end of a burst are written when the interval is over
// (or at flush), so every event is counted in some line.
type rateLog[E any] struct {
	interval time.Duration
	emit     func(last E, count int)

	mu      sync.Mutex
	timer   *time.Timer // set while an interval since the last line runs
	pending int         // events held back since the last line
	last    E           // the last of them
}

func newRateLog[E any](interval time.Duration, emit func(last E, count int)) *rateLog[E] {
	return &rateLog[E]{interval: interval, emit: emit}
}

// note records one event: it is written at once if no line was written
// within the interval, else held back for the line at its end.
func (r *rateLog[E]) note(e E) {
	r.mu.Lock()
	if r.timer != nil {
		r.pending++
		r.last = e
		r.mu.Unlock()
		return
	}
	r.timer = time.AfterFunc(r.interval, r.tick)
	r.mu.Unlock()
	r.emit(e, 1)
}

// tick ends an interval: the events held back, if any, make one line and
// start another interval; else the next event is written at once.
func (r *rateLog[E]) tick() {
	r.mu.Lock()
	if r.pending == 0 {
		r.timer = nil
		r.mu.Unlock()
		return
	}
	e, n := r.take()
	r.timer = time.AfterFunc(r.interval, r.tick)
	r.mu.Unlock()
	r.emit(e, n)
}

// flush writes the events held back now and stops the interval (the
// listener is closing).
func (r *rateLog[E]) flush() {
	r.mu.Lock()
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	e, n := r.take()
	r.mu.Unlock()
	if n > 0 {
		r.emit(e, n)
	}
}

// take returns and clears the events held back; r.mu is held.
func (r *rateLog[E]) take() (E, int) {
	var zero E
	e, n := r.last, r.pending
	r.last, r.pending = zero, 0
	return e, n
}
