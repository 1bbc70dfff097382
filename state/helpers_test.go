package state

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// fakeClock is a clock that moves only when told.
type fakeClock = testutil.Clock

func newFakeClock() *fakeClock {
	// Start at the real time, whole second, so that a Redis server's own
	// clock is close to it.
	return testutil.NewClock(time.Now().Truncate(time.Second))
}

// recorder is a slog.Handler that keeps the records, and passes them on
// to the test log.
type recorder struct {
	next slog.Handler
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newRecorder(t testing.TB) (*slog.Logger, *recorder) {
	h := &recorder{next: testutil.Logger(t).Handler(), mu: &sync.Mutex{}, recs: &[]slog.Record{}}
	return slog.New(h), h
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *recorder) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.recs = append(*h.recs, r.Clone())
	h.mu.Unlock()
	return h.next.Handle(ctx, r)
}

func (h *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorder{next: h.next.WithAttrs(as), mu: h.mu, recs: h.recs}
}

func (h *recorder) WithGroup(name string) slog.Handler {
	return &recorder{next: h.next.WithGroup(name), mu: h.mu, recs: h.recs}
}

// count returns how many records of level lv have a message starting
// with msg.
func (h *recorder) count(lv slog.Level, msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range *h.recs {
		if r.Level == lv && strings.HasPrefix(r.Message, msg) {
			n++
		}
	}
	return n
}

// upRecorder records the OnUp calls.
type upRecorder struct {
	mu    sync.Mutex
	calls []bool
}

func (u *upRecorder) OnUp(up bool) {
	u.mu.Lock()
	u.calls = append(u.calls, up)
	u.mu.Unlock()
}

func (u *upRecorder) get() []bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]bool(nil), u.calls...)
}

// startMiniredis starts a miniredis on a free loopback port, closed at
// the end of the test.
func startMiniredis(t testing.TB) *miniredis.Miniredis {
	t.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatalf("start miniredis: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// openRedis opens a Redis backend with o, closed at the end of the test.
func openRedis(t testing.TB, o RedisOptions) *Redis {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testutil.Logger(t)
	}
	r, err := OpenRedis(o)
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close redis backend: %v", err)
		}
	})
	return r
}

// waitWithin polls cond until it holds, failing the test after d: for the
// promises of the package that have a deadline (a ban is in force on
// every relay within 1s).
func waitWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("%s: not within %s", what, d)
		case <-tick.C:
		}
	}
}
