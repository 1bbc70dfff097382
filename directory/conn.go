package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// conn is a connection of the pool, bound as [directory] bind_dn.
type conn struct {
	l      *ldap.Conn
	raw    net.Conn // the TCP connection under l (and under TLS)
	target *target
	broken bool // closed under an operation that ran out of time
}

// do runs op on cn within ctx: the connection's deadline and go-ldap's
// request timeout are set from ctx's deadline, and the connection is
// closed when ctx ends first, which ends op. A timed-out operation's error
// wraps ctx.Err().
func (cn *conn) do(ctx context.Context, op func(*ldap.Conn) error) error {
	dl, hasDL := ctx.Deadline()
	if hasDL {
		_ = cn.raw.SetDeadline(dl)
		cn.l.SetTimeout(max(time.Until(dl), time.Millisecond))
	}
	stop := context.AfterFunc(ctx, func() { _ = cn.raw.Close() })
	err := op(cn.l)
	if !stop() {
		cn.broken = true
	}
	if err != nil || cn.broken {
		// The connection's deadline may fire an instant before ctx's.
		cerr := ctx.Err()
		if cerr == nil && hasDL && !time.Now().Before(dl) {
			cerr = context.DeadlineExceeded
		}
		switch {
		case cerr == nil || errors.Is(err, cerr):
		case err == nil:
			err = cerr
		default:
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
	}
	_ = cn.raw.SetDeadline(time.Time{})
	cn.l.SetTimeout(0)
	return err
}

// usable reports whether cn may serve another lookup.
func (cn *conn) usable() bool { return !cn.broken && !cn.l.IsClosing() }

func (cn *conn) close() {
	_ = cn.raw.Close()
	_ = cn.l.Close()
}

// take returns an idle connection of the pool (reused true), or nil.
func (c *Client) take() (cn *conn, reused bool) {
	c.poolMu.Lock()
	defer c.poolMu.Unlock()
	for len(c.idle) > 0 {
		cn = c.idle[len(c.idle)-1]
		c.idle[len(c.idle)-1] = nil
		c.idle = c.idle[:len(c.idle)-1]
		if cn.usable() {
			return cn, true
		}
		go cn.close() // the server closed it; Close may wait a little
	}
	return nil, false
}

// release returns cn to the pool, or closes it.
func (c *Client) release(cn *conn) {
	c.poolMu.Lock()
	if !cn.usable() || c.closed.Load() || len(c.idle) >= c.cfg.Connections {
		c.poolMu.Unlock()
		cn.close()
		return
	}
	c.idle = append(c.idle, cn)
	c.poolMu.Unlock()
}

// connect opens a bound connection to the first URL that takes one. Each
// URL but the last gets an equal share of what is left of ctx's time, so
// that a server that hangs leaves time for the next. reachable says a
// server answered, even if with an error (a failed bind).
func (c *Client) connect(ctx context.Context) (cn *conn, reachable bool, err error) {
	var errs joinedErrors
	for i := range c.urls {
		var limit time.Time
		if dl, ok := ctx.Deadline(); ok {
			if left := len(c.urls) - i; left > 1 {
				limit = time.Now().Add(time.Until(dl) / time.Duration(left))
			}
		}
		cn, err := c.dial(ctx, &c.urls[i], limit)
		if err == nil {
			return cn, true, nil
		}
		reachable = reachable || answered(err)
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, reachable, errs
}

// dial connects to t (before limit, if set, and ctx's deadline), upgrades
// with StartTLS if configured and binds.
func (c *Client) dial(ctx context.Context, t *target, limit time.Time) (*conn, error) {
	if !limit.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, limit)
		defer cancel()
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.hostport)
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %w", t.url, err)
	}
	nc := raw
	if t.scheme == "ldaps" {
		tc := tls.Client(raw, t.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("%s: tls: %w", t.url, err)
		}
		nc = tc
	}
	l := ldap.NewConn(nc, t.scheme == "ldaps")
	l.Start()
	cn := &conn{l: l, raw: raw, target: t}
	if t.startTLS {
		if err := cn.do(ctx, func(l *ldap.Conn) error { return l.StartTLS(t.tls) }); err != nil {
			cn.close()
			return nil, fmt.Errorf("%s: starttls: %w", t.url, err)
		}
	}
	if c.cfg.BindDN != "" {
		err := cn.do(ctx, func(l *ldap.Conn) error { return l.Bind(c.cfg.BindDN, string(c.cfg.BindPassword)) })
		if err != nil {
			cn.close()
			return nil, fmt.Errorf("%s: bind as %s: %w", t.url, c.cfg.BindDN, err)
		}
	}
	return cn, nil
}

// joinedErrors are the failures of the URLs tried, on one line.
type joinedErrors []error

func (e joinedErrors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e joinedErrors) Unwrap() []error { return e }
