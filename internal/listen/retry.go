package listen

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Back-off between two failed accepts, as net/http's Server.Serve does:
// 5 ms, doubled after each failure up to 1 s, and back to the start once
// a connection is accepted.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// nextBackoff returns the wait after a failed accept when the previous
// wait was d (0 after a success).
func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, minBackoff), maxBackoff)
}

// temporary reports whether a failed accept is worth retrying: the
// listening socket is fine and a later accept can succeed. That is so
// when the process or the system is out of file descriptors or memory
// (EMFILE, ENFILE, ENOBUFS, ENOMEM), when the pending connection died
// before it was accepted (ECONNABORTED, ECONNRESET), on a deadline, and
// for the network errors accept(2) says to treat like EAGAIN ("For
// reliable operation the application should detect the network errors
// defined for the protocol after accept() and treat them like EAGAIN by
// retrying": ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET,
// EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH; and EPERM, "firewall rules
// forbid connection"). A closed listener (net.ErrClosed) and anything
// else, such as EBADF or EINVAL, is permanent.
func temporary(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET,
		syscall.EINTR, syscall.EAGAIN, syscall.ETIMEDOUT,
		syscall.ENETDOWN, syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EHOSTDOWN, syscall.ENONET,
		syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH, syscall.EPERM:
		return true
	}
	return false
}

// retryListener is a listener whose Accept waits out temporary errors.
type retryListener struct {
	net.Listener
	failed func(err error, wait time.Duration) // reports each temporary error

	closeOnce sync.Once
	closed    chan struct{}
}

func newRetryListener(ln net.Listener, failed func(error, time.Duration)) *retryListener {
	return &retryListener{Listener: ln, failed: failed, closed: make(chan struct{})}
}

// Accept returns the next connection. A temporary error is reported and
// retried after a back-off; only a permanent error, such as the listener
// being closed, is returned. Close ends a back-off at once.
func (l *retryListener) Accept() (net.Conn, error) {
	var wait time.Duration // per call: a success starts the back-off over
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		if !temporary(err) {
			return nil, err
		}
		wait = nextBackoff(wait)
		l.failed(err, wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
}

// Close closes the listener and ends a back-off in progress.
func (l *retryListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
