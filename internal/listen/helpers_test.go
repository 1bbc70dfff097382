package listen

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// echoServer serves a listener guarded by g: every connection echoes
// what it reads until the peer closes it, or for 10 seconds at most. The
// connections still open are closed when the test ends, so it never
// waits on them.
func echoServer(t *testing.T, g *Guard, network string) (dial func(from string) (net.Conn, error), ln net.Listener) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "echo.sock")
	}
	inner, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ln = g.Wrap(inner, "echo")
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					c.Close()
				}()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return func(from string) (net.Conn, error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		if network == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		return d.Dial(network, inner.Addr().String())
	}, ln
}

// accept calls ln.Accept, failing the test (and closing ln) if it does not
// return within 10 seconds.
func accept(t *testing.T, ln net.Listener) (net.Conn, error) {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() { c, err := ln.Accept(); done <- result{c, err} }()
	select {
	case r := <-done:
		return r.c, r.err
	case <-time.After(10 * time.Second):
		ln.Close()
		<-done
		t.Fatal("Accept did not return")
		return nil, nil
	}
}

// served reports whether the server answers on c (else it closed c).
func served(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return false
	}
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return err == nil && b[0] == 'x'
}

func pipeEnd(t *testing.T) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}

// logLines returns the lines of buf that contain msg.
func logLines(buf *testutil.SyncBuffer, msg string) []string {
	var out []string
	for l := range strings.SplitSeq(buf.String(), "\n") {
		if strings.Contains(l, msg) {
			out = append(out, l)
		}
	}
	return out
}

// fakeListener returns its errors in order, then its connections, then
// blocks until closed.
type fakeListener struct {
	mu      sync.Mutex
	errs    []error
	conns   []net.Conn
	closed  chan struct{}
	once    sync.Once
	accepts int
}

func newFakeListener(errs []error, conns ...net.Conn) *fakeListener {
	return &fakeListener{errs: errs, conns: conns, closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	f.accepts++
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	if len(f.conns) > 0 {
		c := f.conns[0]
		f.conns = f.conns[1:]
		f.mu.Unlock()
		return c, nil
	}
	f.mu.Unlock()
	<-f.closed
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10060} }

// acceptErr is what the net package returns for a failed accept4.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// hookRecorder keeps what the Guard hooks were called with.
type hookRecorder struct {
	mu        sync.Mutex
	acceptErr []string // protocol: error
	refused   []string // protocol: reason
}

func (h *hookRecorder) options() GuardOptions {
	return GuardOptions{
		OnAcceptError: func(p string, err error) {
			h.mu.Lock()
			h.acceptErr = append(h.acceptErr, p+": "+err.Error())
			h.mu.Unlock()
		},
		OnRefused: func(p string, r Reason) {
			h.mu.Lock()
			h.refused = append(h.refused, p+": "+string(r))
			h.mu.Unlock()
		},
	}
}

func (h *hookRecorder) counts() (acceptErrors, refused int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.acceptErr), len(h.refused)
}
