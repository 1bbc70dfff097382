package listen

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// lineRecorder keeps the lines a rateLog writes, as "last×count".
type lineRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineRecorder) emit(last int, count int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%d×%d", last, count))
}

func (l *lineRecorder) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

func TestRateLog(t *testing.T) {
	tests := []struct {
		name   string
		bursts [][]int // events noted at once; each burst waits for the lines before it
		want   []string
	}{
		{"one event, one line", [][]int{{1}}, []string{"1×1"}},
		{"a burst: the first at once, the rest at the end of the interval",
			[][]int{{1, 2, 3, 4, 5}}, []string{"1×1", "5×4"}},
		{"quiet again: the next event is written at once",
			[][]int{{1, 2}, {3}, {4, 5, 6}}, []string{"1×1", "2×1", "3×1", "4×1", "6×2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			var rec lineRecorder
			r := newRateLog(20*time.Millisecond, rec.emit)
			want := 0
			for i, burst := range tt.bursts {
				for _, e := range burst {
					r.note(e)
				}
				want += min(len(burst), 2)
				testutil.WaitFor(t, fmt.Sprintf("the lines of burst %d", i), func() bool { return len(rec.get()) == want })
				// And the interval after them is over (no timer left).
				testutil.WaitFor(t, "the interval to end", func() bool {
					r.mu.Lock()
					defer r.mu.Unlock()
					return r.timer == nil
				})
			}
			is.Equal(rec.get(), tt.want)
		})
	}
}

// Within an interval nothing more is written, however many events come;
// flush writes what is held back.
func TestRateLogHoldsBackUntilFlush(t *testing.T) {
	is := is.New(t)
	var rec lineRecorder
	r := newRateLog(time.Hour, rec.emit)
	for i := range 1000 {
		r.note(i)
	}
	is.Equal(rec.get(), []string{"0×1"})
	r.flush()
	is.Equal(rec.get(), []string{"0×1", "999×999"}) // every event counted
	r.flush()
	is.Equal(len(rec.get()), 2) // nothing more to write
	r.note(7)
	is.Equal(rec.get(), []string{"0×1", "999×999", "7×1"}) // after a flush, at once
	r.flush()
}
