package redis

import (
	"testing"

	"github.com/matryer/is"
)

func TestStartStopRestart(t *testing.T) {
	is := is.New(t)
	s := Start(t, "--maxmemory", "64mb")
	addr := s.Addr()
	is.NoErr(ping(addr)) // answers once started

	s.Stop()
	is.True(ping(addr) != nil) // refused once stopped
	s.Stop()                   // stopping twice is harmless

	s.Restart()
	is.Equal(s.Addr(), addr) // same port after a restart
	is.NoErr(ping(addr))

	s.Restart() // restart of a running server
	is.NoErr(ping(addr))
}

func TestTwoServers(t *testing.T) {
	is := is.New(t)
	a, b := Start(t), Start(t)
	is.True(a.Addr() != b.Addr())
	is.NoErr(ping(a.Addr()))
	is.NoErr(ping(b.Addr()))
}

func TestBadOption(t *testing.T) {
	is := is.New(t)
	s := &Server{t: t, bin: Binary, dir: t.TempDir(), args: []string{"--no-such-option", "x"}}
	var err error
	s.port, err = freePort()
	is.NoErr(err)
	err = s.start()
	is.True(err != nil) // a server that exits at start is reported
	t.Log(err)
}

func TestSentinel(t *testing.T) {
	is := is.New(t)
	master := Start(t)
	s := StartSentinel(t, master, "mymaster")
	is.NoErr(ping(s.Addr()))
	s.Restart() // the sentinel restarts from its configuration file
	is.NoErr(ping(s.Addr()))
}
