package listen

import (
	"net"
	"net/netip"
)

// AllowFunc decides whether a TCP peer may use a listener.
type AllowFunc func(ip netip.Addr) bool

// Allow wraps ln so that Accept only returns connections from TCP peers
// that allowed admits; others are closed and reported to denied (which may
// be nil). Unix-socket peers are always admitted: the socket's file mode
// guards them. allowed is asked at every accept, so it can follow a
// configuration reload.
func Allow(ln net.Listener, allowed AllowFunc, denied func(ip netip.Addr)) net.Listener {
	return &allowListener{Listener: ln, allowed: allowed, denied: denied}
}

type allowListener struct {
	net.Listener
	allowed AllowFunc
	denied  func(netip.Addr)
}

// Accept returns the next admitted connection.
func (l *allowListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, isTCP := PeerIP(c)
		if !isTCP || l.allowed(ip) {
			return c, nil
		}
		c.Close()
		if l.denied != nil {
			l.denied(ip)
		}
	}
}
