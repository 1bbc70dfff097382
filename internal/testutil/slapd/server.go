package slapd

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Server is a slapd run for one test by [Start].
type Server struct {
	t testing.TB
	p *Process
}

// Start runs slapd for the test t with its files in t.TempDir(): it fails
// the test when slapd is not installed (it does not skip) or does not come
// up, and stops slapd when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	p, err := Launch(t.TempDir(), 0, o)
	if errors.Is(err, ErrNotInstalled) {
		t.Fatalf("%v", err)
	}
	if err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop slapd: %v", err)
		}
	})
	return &Server{t: t, p: p}
}

// URL returns the server's ldap:// URL (ldap://127.0.0.1:PORT/).
func (s *Server) URL() string { return s.p.URL() }

// LDAPSURL returns the server's ldaps:// URL; "" without Options.TLS.
func (s *Server) LDAPSURL() string { return s.p.LDAPSURL() }

// Addr returns the server's 127.0.0.1:PORT.
func (s *Server) Addr() string { return s.p.Addr() }

// Process returns the underlying process.
func (s *Server) Process() *Process { return s.p }

// Stop stops slapd, failing the test if it would not stop; the port stays
// closed until Restart.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.p.Stop(); err != nil {
		s.t.Fatalf("stop slapd: %v", err)
	}
}

// Restart starts slapd again, stopped or not, on the same port with the
// same data, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.p.Restart(); err != nil {
		s.t.Fatalf("restart slapd: %v", err)
	}
}

// Blackhole returns the ldap:// URL of a loopback listener that accepts
// connections and never answers, for timeout tests; it is closed, with
// the connections it accepted, when the test ends.
func Blackhole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("blackhole: %v", err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "ldap://" + l.Addr().String() + "/"
}

// DeadURL returns the ldap:// URL of a loopback port nothing listens on:
// connecting to it is refused.
func DeadURL(t testing.TB) string {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatalf("dead url: %v", err)
	}
	return "ldap://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/"
}
