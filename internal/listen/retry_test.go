package listen

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
)

func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		n    int
	}{
		{"EMFILE", acceptErr(syscall.EMFILE), 3},
		{"ENFILE", acceptErr(syscall.ENFILE), 2},
		{"ENOBUFS", acceptErr(syscall.ENOBUFS), 1},
		{"ENOMEM", acceptErr(syscall.ENOMEM), 1},
		{"ECONNABORTED", acceptErr(syscall.ECONNABORTED), 2},
		{"ECONNRESET", acceptErr(syscall.ECONNRESET), 1},
		{"EPROTO", acceptErr(syscall.EPROTO), 1},
		{"timeout", &net.OpError{Op: "accept", Net: "tcp", Err: timeoutErr{}}, 2},
		{"wrapped", fmt.Errorf("accept: %w", acceptErr(syscall.EMFILE)), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			errs := make([]error, tt.n)
			for i := range errs {
				errs[i] = tt.err
			}
			server, client := net.Pipe()
			defer client.Close()
			fake := newFakeListener(errs, server)
			var h hookRecorder
			ln := NewGuard(h.options()).Wrap(fake, "policy")
			c, err := accept(t, ln)
			is.NoErr(err)                           // the errors were waited out
			is.Equal(c.(*limitedConn).Conn, server) // and the connection came through
			c.Close()
			n, _ := h.counts()
			is.Equal(n, tt.n) // each error reported once
			is.True(h.acceptErr[0] == "policy: "+tt.err.Error())

			done := make(chan error, 1)
			go func() { _, err := ln.Accept(); done <- err }()
			ln.Close()
			err = <-done
			is.True(errors.Is(err, net.ErrClosed)) // a closed listener is the end
		})
	}
}

func TestAcceptReturnsPermanentErrors(t *testing.T) {
	for _, err := range []error{
		acceptErr(syscall.EBADF),
		acceptErr(syscall.EINVAL),
		&net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed},
		errors.New("something else"),
	} {
		t.Run(err.Error(), func(t *testing.T) {
			is := is.New(t)
			fake := newFakeListener([]error{err})
			var h hookRecorder
			ln := NewGuard(h.options()).Wrap(fake, "milter")
			defer ln.Close()
			_, got := accept(t, ln)
			is.Equal(got, err) // returned as it came
			n, _ := h.counts()
			is.Equal(n, 0) // not retried
		})
	}
}

func TestCloseEndsTheBackoff(t *testing.T) {
	is := is.New(t)
	errs := make([]error, 1000) // more than the test would wait out
	for i := range errs {
		errs[i] = acceptErr(syscall.EMFILE)
	}
	fake := newFakeListener(errs)
	failed := make(chan struct{}, len(errs))
	ln := NewGuard(GuardOptions{OnAcceptError: func(string, error) { failed <- struct{}{} }}).Wrap(fake, "policy")
	done := make(chan error, 1)
	go func() { _, err := ln.Accept(); done <- err }()
	for i := range 8 { // up to a back-off of 640 ms
		select {
		case <-failed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d accept errors reported, want 8", i)
		}
	}
	is.NoErr(ln.Close())
	err := <-done
	is.True(errors.Is(err, net.ErrClosed))
	is.Equal(err.(*net.OpError).Addr.String(), "127.0.0.1:10060") // names the listener
}

func TestBackoff(t *testing.T) {
	is := is.New(t)
	var got []time.Duration
	d := time.Duration(0)
	for range 10 {
		d = nextBackoff(d)
		got = append(got, d)
	}
	ms := time.Millisecond
	is.Equal(got, []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second})
}
