package listen

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// GuardOptions set up a Guard; every field may be left zero.
type GuardOptions struct {
	// Logger receives the warnings: on each listener, at most one line
	// every 10 seconds per kind (accept errors, each refusal reason). The
	// first of a burst is written at once; the rest make one line at the
	// end of the interval (or when the listener closes) with their count
	// and the last of them. nil discards them.
	Logger *slog.Logger
	// Allow admits TCP peers; it is asked at every accept, so it follows
	// a configuration reload. nil admits every peer.
	Allow AllowFunc
	// Limits returns the connection limits; it is asked at every accept,
	// so a reload applies to the next connection (open ones are never cut).
	// nil sets no limit at all.
	Limits func() Limits
	// DefaultMaxConnections stands for Limits.MaxConnections = 0; zero
	// means DefaultMaxConnections(), from the file descriptor limit.
	DefaultMaxConnections int
	// OnAcceptError is called for every temporary accept error (EMFILE
	// and the like) before the listener waits and retries.
	OnAcceptError func(protocol string, err error)
	// OnRefused is called for every connection closed by the Guard, with
	// the reason: a fixed text, fit for a metric label.
	OnRefused func(protocol string, reason Reason)
}

// Guard protects the policy and milter listeners, one Guard for all of
// them: it waits out accept errors instead of returning them, refuses
// peers outside the allow list, and bounds the connections open at once
// in all and per TCP peer.
type Guard struct {
	opts        GuardOptions
	lim         *limiter
	logInterval time.Duration // between two log lines of one kind
}

// NewGuard returns a Guard set up by opts.
func NewGuard(opts GuardOptions) *Guard {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DefaultMaxConnections <= 0 {
		opts.DefaultMaxConnections = DefaultMaxConnections()
	}
	return &Guard{opts: opts, lim: newLimiter(opts.Limits, opts.DefaultMaxConnections), logInterval: logInterval}
}

// Connections returns how many connections of protocol (as given to
// Wrap) are open now: a gauge.
func (g *Guard) Connections(protocol string) int { return g.lim.open(protocol) }

// Wrap returns ln guarded; protocol ("policy", "milter") names it in
// hooks, logs and Connections. Its Accept:
//
//   - never returns a temporary error: EMFILE, ENFILE, ENOBUFS, ENOMEM,
//     ECONNABORTED, ECONNRESET, timeouts and the other errors accept(2)
//     says to retry are reported (OnAcceptError, a warning) and retried
//     after a back-off of 5 ms doubling to 1 s, reset by a success, as
//     net/http does. Only a closed listener (net.ErrClosed) or another
//     permanent error is returned; Close also ends a back-off.
//   - closes a TCP peer that Allow refuses. This comes before the limits:
//     it is the cheaper check, and a refused peer then never holds a
//     slot or counts toward a limit.
//   - closes a connection over Limits at once, before anything is read
//     from it or allocated for it, and reports it (OnRefused, a warning).
//
// A connection returned holds its slot until it is closed; Close may be
// called any number of times, by anyone, and releases it once. Closing
// the listener writes the warnings still held back by the rate limit.
func (g *Guard) Wrap(ln net.Listener, protocol string) net.Listener {
	gl := &guardedListener{g: g, protocol: protocol}
	gl.retry = newRetryListener(ln, gl.acceptFailed)
	gl.Listener = gl.retry
	gl.acceptLog = newRateLog(g.logInterval, gl.logAcceptError)
	for i := range gl.refusedLog {
		gl.refusedLog[i] = newRateLog(g.logInterval, gl.logRefused)
	}
	return gl
}

// guardedListener is a listener returned by Guard.Wrap.
type guardedListener struct {
	net.Listener // the retrying listener
	retry        *retryListener
	g            *Guard
	protocol     string
	acceptLog    *rateLog[acceptError]
	refusedLog   [3]*rateLog[refusal] // by reasonIndex
}

// acceptError is a temporary accept error, as logged.
type acceptError struct {
	err  error
	wait time.Duration
}

// refusal is a connection the Guard closed, as logged.
type refusal struct {
	reason Reason
	limit  int        // the limit reached; 0 for ReasonNotAllowed
	peer   netip.Addr // invalid for a unix-socket peer
}

// Accept returns the next admitted connection.
func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.retry.Accept()
		if err != nil {
			return nil, err
		}
		// A refusal is counted before the connection is closed: a peer
		// that sees its connection closed finds it in the metrics.
		ip, isTCP := PeerIP(c)
		if isTCP && l.g.opts.Allow != nil && !l.g.opts.Allow(ip) {
			l.refused(refusal{reason: ReasonNotAllowed, peer: ip})
			c.Close()
			continue
		}
		reason, limit := l.g.lim.acquire(l.protocol, ip, isTCP)
		if reason != "" {
			l.refused(refusal{reason: reason, limit: limit, peer: ip})
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, lim: l.g.lim, protocol: l.protocol, ip: ip, isTCP: isTCP}, nil
	}
}

// Close closes the listener, ends a back-off in progress and writes the
// warnings held back.
func (l *guardedListener) Close() error {
	err := l.retry.Close()
	l.acceptLog.flush()
	for _, r := range l.refusedLog {
		r.flush()
	}
	return err
}

func (l *guardedListener) acceptFailed(err error, wait time.Duration) {
	if h := l.g.opts.OnAcceptError; h != nil {
		h(l.protocol, err)
	}
	l.acceptLog.note(acceptError{err: err, wait: wait})
}

func (l *guardedListener) logAcceptError(e acceptError, n int) {
	l.g.opts.Logger.Warn("accept failed; retrying",
		slog.String("protocol", l.protocol), slog.String("listener", l.Addr().String()),
		slog.Any("error", e.err), slog.Int("errors", n), slog.Duration("retry_in", e.wait))
}

func reasonIndex(r Reason) int {
	switch r {
	case ReasonMaxConnections:
		return 1
	case ReasonMaxConnectionsPerIP:
		return 2
	}
	return 0
}

func (l *guardedListener) refused(r refusal) {
	if h := l.g.opts.OnRefused; h != nil {
		h(l.protocol, r.reason)
	}
	l.refusedLog[reasonIndex(r.reason)].note(r)
}

func (l *guardedListener) logRefused(r refusal, n int) {
	attrs := []slog.Attr{slog.String("protocol", l.protocol), slog.String("listener", l.Addr().String()),
		slog.String("reason", string(r.reason))}
	if r.limit > 0 {
		attrs = append(attrs, slog.Int("limit", r.limit))
	}
	if r.peer.IsValid() {
		attrs = append(attrs, slog.String("peer", r.peer.String()))
	}
	attrs = append(attrs, slog.Int("refused", n))
	msg := "connection refused: too many connections"
	if r.reason == ReasonNotAllowed {
		msg = "connection refused: peer not allowed by [server] allow"
	}
	l.g.opts.Logger.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}
