package listen

import (
	"net"
	"net/netip"
	"sync"
)

// Reason names why a connection was refused, as hooks and log lines
// give it (and a metric label can carry it).
type Reason string

// The reasons a Guard refuses a connection.
const (
	// ReasonNotAllowed: the TCP peer is outside the allow list.
	ReasonNotAllowed Reason = "not_allowed"
	// ReasonMaxConnections: the connections of all guarded listeners
	// together are at Limits.MaxConnections.
	ReasonMaxConnections Reason = "max_connections"
	// ReasonMaxConnectionsPerIP: the peer's address holds
	// Limits.MaxConnectionsPerIP connections.
	ReasonMaxConnectionsPerIP Reason = "max_connections_per_ip"
)

// Limits bound the connections open at once ([server] max_connections
// and max_connections_per_ip).
type Limits struct {
	// MaxConnections bounds all connections of all guarded listeners,
	// unix-socket ones included; 0 means the Guard's default (see
	// DefaultMaxConnections).
	MaxConnections int
	// MaxConnectionsPerIP bounds the connections of one TCP peer
	// address; 0 sets no bound. Unix-socket peers have no address and
	// count toward MaxConnections only.
	MaxConnectionsPerIP int
}

// limiter counts the open connections, in all, per TCP peer address and
// per protocol.
type limiter struct {
	limits     func() Limits // nil: no limits
	defaultMax int

	mu      sync.Mutex
	total   int
	perIP   map[netip.Addr]int // entries removed at 0: as large as the open connections
	byProto map[string]int
}

func newLimiter(limits func() Limits, defaultMax int) *limiter {
	return &limiter{limits: limits, defaultMax: defaultMax, perIP: map[netip.Addr]int{}, byProto: map[string]int{}}
}

// acquire takes a slot for a connection of protocol from ip (isTCP false:
// a unix-socket peer), or returns the limit that refuses it and its value.
func (l *limiter) acquire(protocol string, ip netip.Addr, isTCP bool) (Reason, int) {
	var lim Limits
	if l.limits != nil {
		lim = l.limits()
		if lim.MaxConnections <= 0 {
			lim.MaxConnections = l.defaultMax
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim.MaxConnections > 0 && l.total >= lim.MaxConnections {
		return ReasonMaxConnections, lim.MaxConnections
	}
	if isTCP {
		if lim.MaxConnectionsPerIP > 0 && l.perIP[ip] >= lim.MaxConnectionsPerIP {
			return ReasonMaxConnectionsPerIP, lim.MaxConnectionsPerIP
		}
		l.perIP[ip]++
	}
	l.total++
	l.byProto[protocol]++
	return "", 0
}

// release gives back a slot taken by acquire.
func (l *limiter) release(protocol string, ip netip.Addr, isTCP bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byProto[protocol]--; l.byProto[protocol] == 0 {
		delete(l.byProto, protocol)
	}
	if isTCP {
		if l.perIP[ip]--; l.perIP[ip] == 0 {
			delete(l.perIP, ip)
		}
	}
}

// open returns the connections of protocol open now.
func (l *limiter) open(protocol string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byProto[protocol]
}

// limitedConn is an admitted connection: closing it, once or many times,
// gives its slot back once.
type limitedConn struct {
	net.Conn
	lim      *limiter
	protocol string
	ip       netip.Addr
	isTCP    bool
	once     sync.Once
}

// Close closes the connection and releases its slot; later calls only
// close again (returning the connection's error).
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c.protocol, c.ip, c.isTCP) })
	return err
}
