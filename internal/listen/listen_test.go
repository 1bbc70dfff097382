package listen

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
)

func TestListenTCP(t *testing.T) {
	is := is.New(t)
	ln, err := Listen("127.0.0.1:0", 0o660)
	is.NoErr(err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	is.NoErr(err)
	defer c.Close()
	ip, ok := PeerIP(c)
	is.True(ok)
	is.Equal(ip.String(), "127.0.0.1")

	_, err = Listen(ln.Addr().String(), 0o660) // taken
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), ln.Addr().String())) // names the address
}

func TestListenUnix(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen("unix:"+path, 0o640)
	is.NoErr(err)
	fi, err := os.Stat(path)
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o640))

	_, err = Listen("unix:"+path, 0o640) // live: refused
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "another process"))
	ln.Close()

	// A stale socket file (no listener) is replaced. net.UnixListener
	// removes its file on Close, so make a stale one by hand.
	l2, err := net.Listen("unix", path)
	is.NoErr(err)
	l2.(*net.UnixListener).SetUnlinkOnClose(false)
	l2.Close()
	ln, err = Listen("unix:"+path, 0o600)
	is.NoErr(err)
	ln.Close()

	plain := filepath.Join(t.TempDir(), "file")
	is.NoErr(os.WriteFile(plain, nil, 0o600))
	_, err = Listen("unix:"+plain, 0o600)
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "not a socket"))
}

func TestAllow(t *testing.T) {
	is := is.New(t)
	inner, err := Listen("127.0.0.1:0", 0o660)
	is.NoErr(err)
	var admit atomic.Bool
	deniedPeers := make(chan string, 4)
	ln := Allow(inner, func(netip.Addr) bool { return admit.Load() }, func(ip netip.Addr) { deniedPeers <- ip.String() })
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c1, err := net.DialTimeout("tcp", inner.Addr().String(), 5*time.Second)
	is.NoErr(err)
	defer c1.Close()
	is.Equal(receive(t, deniedPeers), "127.0.0.1") // refused and reported
	c1.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c1.Read(make([]byte, 1))
	is.True(err != nil && !os.IsTimeout(err)) // closed by the listener
	admit.Store(true)                         // a reload that allows the peer
	c2, err := net.DialTimeout("tcp", inner.Addr().String(), 5*time.Second)
	is.NoErr(err)
	defer c2.Close()
	c := receive(t, accepted)
	defer c.Close()
	is.Equal(c.RemoteAddr().String(), c2.LocalAddr().String())
}

// receive returns the next value of ch, failing the test after 10 seconds.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
		panic("unreachable")
	}
}
