package milter

// The guard: every byte the MTA sends reaches go-milter through it, one
// checked packet at a time.
//
// Why a guard and not a fork: go-milter v0.10.1 (the newest release)
// panics in its own session goroutine on some malformed packets, where
// nothing of ours can recover the panic, so the whole daemon exits; and it
// allocates whatever length a packet announces before reading it. We do
// not fork it: a net.Conn wrapper between the listener and
// gomilter.Server.Serve checks each packet's framing and required NULs
// before go-milter reads it. No copy of a third-party library to maintain,
// and the check holds whatever go-milter version sits behind it.
//
// What to send upstream (github.com/d--j/go-milter, v0.10.1):
//
//   - internal/wire/wire.go ReadPacket: a packet of length 0 makes
//     data[0] panic (index out of range), both as the first packet and
//     after negotiation; and the length is allocated up front, so a
//     length of 0x1FFFFFFF allocates 512 MiB before a byte of it arrives.
//     libmilter (comm.c mi_rd_cmd) refuses a length of 0 and one over the
//     negotiated maximum data size before it allocates.
//   - session.go processMsg, SMFIC_CONNECT: data without a NUL ("host"
//     only) or with no byte after the NUL ("host\0", no family) slices or
//     indexes past the end and panics.
//   - session.go processMsg, SMFIC_MAIL and SMFIC_RCPT: data without a
//     NUL makes msg.Data[len(from)+1:] slice past the end and panic.
//   - The session goroutine started by Server.Serve has no recover, so
//     any panic, in the library or in a Milter callback, ends the
//     process.
//   - Server.Shutdown waits for sessions that are idle between two SMTP
//     commands; it could close those at once and end busy ones after
//     their current reply.

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// guard wraps the listeners of one Server and tracks the connections it
// handed out, so Shutdown can end the idle ones.
type guard struct {
	log         *slog.Logger
	onMalformed func(reason string)
	// idle returns the longest wait for the next packet after negotiation
	// ([server] milter_idle_timeout, read at every packet so a reload
	// applies to open connections); nil or 0 for no limit.
	idle    func() time.Duration
	bufs    sync.Pool // *[]byte: header and body of a packet in flight
	closing atomic.Bool

	mu    sync.Mutex
	conns map[*guardConn]struct{}
}

func newGuard(log *slog.Logger, onMalformed func(string), idle func() time.Duration) *guard {
	return &guard{log: log, onMalformed: onMalformed, idle: idle, conns: make(map[*guardConn]struct{})}
}

// listener wraps ln: Accept returns guarded connections.
func (g *guard) listener(ln net.Listener) net.Listener {
	return &guardListener{Listener: ln, g: g}
}

type guardListener struct {
	net.Listener
	g *guard
}

// Accept returns the next connection, guarded.
func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.g.wrap(c), nil
}

func (g *guard) wrap(c net.Conn) *guardConn {
	gc := &guardConn{Conn: c, g: g, maxLen: maxNegotiationLen}
	g.mu.Lock()
	g.conns[gc] = struct{}{}
	g.mu.Unlock()
	return gc
}

// shutdown makes every guarded connection end at its next packet: a
// connection waiting for a packet of which nothing has arrived ends at
// once, a busy one when go-milter comes back for its next packet (after
// the reply to the current one).
func (g *guard) shutdown() {
	g.closing.Store(true)
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.interrupt()
	}
}

// active returns how many guarded connections are open.
func (g *guard) active() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// getBuf returns a buffer of n bytes from the pool.
func (g *guard) getBuf(n int) *[]byte {
	if b, ok := g.bufs.Get().(*[]byte); ok {
		if cap(*b) >= n {
			*b = (*b)[:n]
			return b
		}
		g.bufs.Put(b)
	}
	b := make([]byte, n, max(n, 4<<10))
	return &b
}

// guardConn is one MTA connection. Read hands go-milter the MTA's bytes
// one checked packet at a time: it reads the 4-byte length into a fixed
// array, checks it before allocating anything, reads the body into a
// pooled buffer, checks the contents, and only then lets go-milter read
// header and body. The buffer goes back to the pool as soon as go-milter
// has read the packet, so a connection waiting for its next packet holds
// none. A malformed packet is logged once, reported to OnMalformed and
// ends the connection; go-milter sees io.EOF, a normal close it does not
// log.
//
// This relies on go-milter reading one packet, handling it and only then
// reading the next (wire.ReadPacket reads without buffering): a Read
// that finds no packet in flight is go-milter waiting for the next one.
// Read deadlines set by go-milter (at negotiation) are passed through;
// after negotiation the guard sets the idle deadline before each packet.
type guardConn struct {
	net.Conn
	g *guard

	// Owned by the reading goroutine (go-milter's session).
	hdr        [4]byte
	pkt        *[]byte // packet in flight: length, code, data
	off        int     // bytes of pkt go-milter has read
	negotiated bool
	maxLen     uint32 // the largest length accepted now
	err        error  // sticky: the stream cannot go on after an error

	mu          sync.Mutex
	waiting     bool      // blocked for the first byte of a packet
	interrupted bool      // shutdown moved the read deadline to the past
	deadline    time.Time // the read deadline go-milter set

	closeOnce sync.Once
	closeErr  error
}

// Read implements net.Conn.
func (c *guardConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if c.pkt == nil {
		if err := c.next(); err != nil {
			c.err = err
			return 0, err
		}
	}
	n := copy(p, (*c.pkt)[c.off:])
	c.off += n
	if c.off == len(*c.pkt) {
		c.g.bufs.Put(c.pkt)
		c.pkt, c.off = nil, 0
	}
	return n, nil
}

// next reads, checks and buffers the next packet.
func (c *guardConn) next() error {
	if err := c.readHeader(); err != nil {
		return err
	}
	length := uint32(c.hdr[0])<<24 | uint32(c.hdr[1])<<16 | uint32(c.hdr[2])<<8 | uint32(c.hdr[3])
	if length == 0 {
		return c.malformed(0, length, reasonEmpty)
	}
	// Checked before anything is allocated.
	if length > c.maxLen {
		return c.malformed(-1, length, reasonTooLarge)
	}
	b := c.g.getBuf(4 + int(length))
	copy(*b, c.hdr[:])
	if _, err := io.ReadFull(c.Conn, (*b)[4:]); err != nil {
		c.g.bufs.Put(b)
		return c.readError(err)
	}
	code, data := (*b)[4], (*b)[5:]
	if reason := checkPacket(c.negotiated, code, data); reason != "" {
		c.g.bufs.Put(b)
		return c.malformed(int(code), length, reason)
	}
	if !c.negotiated {
		c.negotiated = true
		protoMask := uint32(data[8])<<24 | uint32(data[9])<<16 | uint32(data[10])<<8 | uint32(data[11])
		// +1: the length counts the command code.
		c.maxLen = maxDataSize(protoMask) + 1 + headerHeadroom
	}
	c.pkt, c.off = b, 0
	return nil
}

// readHeader reads the 4-byte length. While nothing of it has arrived the
// connection counts as waiting, and shutdown may end it.
func (c *guardConn) readHeader() error {
	c.mu.Lock()
	if c.g.closing.Load() {
		c.mu.Unlock()
		return io.EOF // the server is shutting down: end quietly
	}
	var idle time.Duration
	if c.negotiated && c.g.idle != nil {
		// go-milter sets no deadline after negotiation (read timeout 0):
		// the idle limit is ours, from the configuration in force.
		if idle = c.g.idle(); idle > 0 {
			c.deadline = time.Now().Add(idle)
			if !c.interrupted {
				_ = c.Conn.SetReadDeadline(c.deadline)
			}
		}
	}
	c.waiting = true
	c.mu.Unlock()

	var n int
	var err error
	for n == 0 && err == nil {
		n, err = c.Conn.Read(c.hdr[:])
	}

	c.mu.Lock()
	c.waiting = false
	interrupted := c.interrupted
	if interrupted {
		// Give go-milter its deadline back for the rest of the packet.
		c.interrupted = false
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
	c.mu.Unlock()

	if n == 0 {
		if interrupted && errors.Is(err, os.ErrDeadlineExceeded) {
			return io.EOF // shutdown cut the wait short
		}
		if idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			c.g.log.Info("milter connection idle too long; closing",
				slog.String("peer", peerName(c.Conn)), slog.Duration("milter_idle_timeout", idle))
			return io.EOF
		}
		return err // io.EOF when the MTA closed; a timeout; ...
	}
	if n < len(c.hdr) {
		if _, err := io.ReadFull(c.Conn, c.hdr[n:]); err != nil {
			return c.readError(err)
		}
	}
	return nil
}

// readError turns an error in the middle of a packet into what go-milter
// gets: the MTA closing mid-packet is a plain end of the connection.
func (c *guardConn) readError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		c.g.log.Debug("milter client closed the connection in the middle of a packet",
			slog.String("peer", peerName(c.Conn)))
		return io.EOF
	}
	return err
}

// malformed logs a refused packet, reports it, closes the connection and
// returns the error go-milter gets: io.EOF, which it treats as a normal
// close and does not log. code is the command code, or -1 when it was
// not read (0 when the packet had none).
func (c *guardConn) malformed(code int, length uint32, reason string) error {
	codeText := ""
	if code >= 0 && length > 0 {
		codeText = strconv.QuoteToASCII(string([]byte{byte(code)}))
	}
	c.g.log.Warn("malformed milter packet; closing the connection",
		slog.String("peer", peerName(c.Conn)), slog.String("code", codeText),
		slog.Uint64("length", uint64(length)), slog.String("reason", reason))
	if c.g.onMalformed != nil {
		c.g.onMalformed(reason)
	}
	_ = c.Close()
	return io.EOF
}

// interrupt ends a wait for the first byte of a packet by moving the read
// deadline to the past; bytes that already arrived are still read.
func (c *guardConn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting && !c.interrupted {
		c.interrupted = true
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// SetReadDeadline implements net.Conn. It records the deadline, so one
// cut short by shutdown can be given back.
func (c *guardConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.interrupted {
		return nil // restored when the interrupted read returns
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline implements net.Conn.
func (c *guardConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// Close implements net.Conn; calls after the first return its result.
func (c *guardConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		c.g.mu.Lock()
		delete(c.g.conns, c)
		c.g.mu.Unlock()
	})
	return c.closeErr
}

// peerName names the MTA end of c for logs: its address, or for a unix
// socket (whose peers have no name) the socket's path.
func peerName(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.Network() != "unix" && a.String() != "" {
		return a.String()
	}
	if a := c.LocalAddr(); a != nil {
		return "unix:" + a.String()
	}
	return "unix"
}
