// Package policy serves the rules engine over Postfix's SMTP access policy
// delegation protocol (SMTPD_POLICY_README): one request of name=value
// lines ended by an empty line, one "action=..." reply, many requests on a
// persistent connection. The package only translates: it fills a
// rules.Session from the request attributes, calls the engine stage that
// protocol_state names, and writes the verdict back.
package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/listen"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policy: server closed")

// Options tune a Server; every field may be left zero.
type Options struct {
	// Logger receives bad-input and connection logs; nil discards them.
	Logger *slog.Logger
	// MaxInstances bounds the per-message state kept (default 100,000).
	MaxInstances int
	// InstanceTTL drops the state of a message not heard of for this long
	// (default 30 minutes, well past Postfix's SMTP command timeouts).
	InstanceTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// WriteTimeout bounds the write of each reply (default 10s), so a
	// client that sends requests and never reads the replies cannot hold
	// its connection.
	WriteTimeout time.Duration
	// OnBadRequest, when set, is called once for each request refused for
	// breaking the protocol (each ends its connection), with the reason:
	// one of ReasonLineTooLong and the other Reason constants, fixed texts
	// without client data, fit for a metric label.
	OnBadRequest func(reason string)
	// OnBadAddress, when set, is called once for each message whose
	// client_address is there but cannot be parsed.
	OnBadAddress func()
	// OnRequest, when set, is called after each request is decided, with
	// the time the decision took (the engine and its DNS lookups).
	OnRequest func(d time.Duration)
}

// readBufferBytes is the read buffer of a connection. Postfix's requests
// come one at a time, around 1 KiB each in lines of well under 1 KiB, so
// one or two reads take a request; a longer line is gathered by
// ReadRequest. An idle connection (Postfix keeps many open) thus holds
// 1 KiB rather than MaxLineBytes.
const readBufferBytes = 1024

// shutdownWriteGrace bounds a reply written while the server shuts down:
// a client that reads gets its reply long before, and one that does not
// is closed then, not after WriteTimeout.
const shutdownWriteGrace = time.Second

// Server is a policy delegation server. Serve may be called on several
// listeners at once; Shutdown stops them all.
type Server struct {
	engine       *rules.Engine
	log          *slog.Logger
	instances    *instanceTable
	writeTimeout time.Duration
	onBadRequest func(reason string)
	onBadAddress func()
	onRequest    func(time.Duration)
	writers      sync.Pool // *bufio.Writer, taken only to write a reply

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup
}

// New returns a server answering with engine's verdicts.
func New(engine *rules.Engine, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxInstances <= 0 {
		opts.MaxInstances = 100_000
	}
	if opts.InstanceTTL <= 0 {
		opts.InstanceTTL = 30 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	return &Server{
		engine:       engine,
		log:          opts.Logger,
		instances:    newInstanceTable(opts.MaxInstances, opts.InstanceTTL, opts.Now),
		writeTimeout: opts.WriteTimeout,
		onBadRequest: opts.OnBadRequest,
		onBadAddress: opts.OnBadAddress,
		onRequest:    opts.OnRequest,
		writers:      sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 512) }},
		listeners:    map[net.Listener]struct{}{},
		conns:        map[*conn]struct{}{},
	}
}

// Serve accepts connections on ln until Shutdown, serving each on its own
// goroutine. TCP peers outside [server] allow are logged and closed.
//
// Serve returns on the first error of ln.Accept other than after Shutdown.
// Give it a listener wrapped by listen.Guard, whose Accept waits out
// temporary errors (too many open files and the like) and reports them,
// and which bounds the connections open at once.
func (s *Server) Serve(ln net.Listener) error {
	if s.closing.Load() {
		ln.Close()
		return ErrServerClosed
	}
	ln = listen.Allow(ln, s.allowed, func(ip netip.Addr) {
		s.log.Warn("policy client not allowed by [server] allow; closing", slog.String("peer", ip.String()))
	})
	s.mu.Lock()
	if s.closing.Load() {
		// Shutdown ran between the check above and here: it closed the
		// listeners it knew, not this one.
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			return fmt.Errorf("policy: accept on %s: %w", ln.Addr(), err)
		}
		c := &conn{srv: s, nc: nc, peer: nc.RemoteAddr().String()}
		if !s.track(c) {
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

// allowed applies [server] allow, as configured now.
func (s *Server) allowed(ip netip.Addr) bool {
	_, ok := s.engine.Config().Server.Allow.Match(ip, "")
	return ok
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, lets every request being worked on get its
// reply, closes idle connections, and waits for all connections to end or
// ctx to expire (then it closes them outright). A reply its client does
// not read within a second of Shutdown (shutdownWriteGrace) ends its
// connection then, without waiting for WriteTimeout or ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.interrupt()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		err = ctx.Err()
	}
	// Record the messages still held.
	for _, in := range s.instances.drain() {
		s.endInstance(in)
	}
	return err
}

// conn is one policy client connection.
type conn struct {
	srv  *Server
	nc   net.Conn
	peer string

	mu            sync.Mutex
	state         connState
	writeDeadline time.Time // of the reply being written
	// local holds the message state of clients that send no instance
	// attribute: it lives as long as the connection.
	local *instance
	// last is the instance of the previous request: when the next request
	// names another, that message is over (an smtpd process handles one
	// SMTP session at a time). A closed connection ends nothing: Postfix
	// may carry on with the same message on a new connection.
	last *instance
}

// endComplete records the connection's last message when its DATA was
// answered: nothing more will come for it unless Postfix also asks at
// END-OF-MESSAGE, which ends it anyway. A message cut off earlier may go on
// over a new connection, so it stays.
func (c *conn) endComplete() {
	in := c.last
	if in == nil || in == c.local {
		return
	}
	in.mu.Lock()
	done := in.dataSeen
	in.mu.Unlock()
	if done {
		c.srv.endInstance(in)
		c.srv.instances.remove(in)
	}
}

// connState is where a connection is in its request cycle.
type connState int

const (
	stateIdle    connState = iota // waiting for its next request
	stateBusy                     // a request is being worked on
	stateWriting                  // its reply is being written
)

// interrupt is Shutdown's: a connection waiting for its next request
// returns at once; a busy one finishes its request, and its reply is
// written within shutdownWriteGrace; then it sees the server closing.
func (c *conn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateIdle:
		c.nc.SetReadDeadline(time.Now())
	case stateWriting:
		if d := time.Now().Add(shutdownWriteGrace); d.Before(c.writeDeadline) {
			c.writeDeadline = d
			c.nc.SetWriteDeadline(d)
		}
	}
}

// idle marks the connection waiting for its next request and arms the
// idle timeout; it returns false when the server is closing. Both under
// c.mu, so Shutdown either sees the connection idle (and interrupts the
// wait) or the connection sees Shutdown.
func (c *conn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv.closing.Load() {
		return false
	}
	c.state = stateIdle
	c.nc.SetReadDeadline(time.Now().Add(c.srv.engine.Config().Server.IdleTimeout))
	return true
}

func (c *conn) setState(st connState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = st
}

// writing marks the connection writing its reply and arms the write
// deadline: WriteTimeout, or shutdownWriteGrace once Shutdown has begun.
func (c *conn) writing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = stateWriting
	d := c.srv.writeTimeout
	if c.srv.closing.Load() {
		d = min(d, shutdownWriteGrace)
	}
	c.writeDeadline = time.Now().Add(d)
	c.nc.SetWriteDeadline(c.writeDeadline)
}

// reply writes one reply through a pooled buffer: between requests a
// connection holds none.
func (c *conn) reply(v *rules.Verdict, prepend *rules.Header) error {
	w := c.srv.writers.Get().(*bufio.Writer)
	w.Reset(c.nc)
	err := writeReply(w, v, prepend)
	w.Reset(nil)
	c.srv.writers.Put(w)
	return err
}

func (c *conn) serve() {
	defer c.srv.untrack(c)
	defer c.nc.Close()
	defer c.endComplete()
	defer func() {
		if r := recover(); r != nil {
			c.srv.log.Error("policy connection panicked; closing it", slog.String("peer", c.peer), slog.Any("panic", r))
		}
	}()
	r := bufio.NewReaderSize(c.nc, readBufferBytes)
	var req Request
	for c.idle() {
		err := ReadRequest(r, &req)
		if err != nil {
			c.readFailed(err)
			return
		}
		c.setState(stateBusy)
		start := time.Now()
		v, prepend := c.srv.decide(c, &req)
		if c.srv.onRequest != nil {
			c.srv.onRequest(time.Since(start))
		}
		c.writing()
		if err := c.reply(&v, prepend); err != nil {
			c.writeFailed(err)
			return
		}
	}
}

func (c *conn) writeFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.srv.log.Warn("policy client does not read its replies; closing connection", slog.String("peer", c.peer))
		return
	}
	c.srv.log.Info("policy client went away before its reply", slog.String("peer", c.peer), slog.Any("error", err))
}

func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, ErrBadRequest):
		// SMTPD_POLICY_README gives no error reply: log and close.
		c.srv.log.Warn("bad policy request; closing connection", slog.String("peer", c.peer), slog.String("error", err.Error()))
		if c.srv.onBadRequest != nil {
			c.srv.onBadRequest(BadRequestReason(err))
		}
	case errors.As(err, &ne) && ne.Timeout():
		if !c.srv.closing.Load() {
			c.srv.log.Debug("policy connection idle; closing", slog.String("peer", c.peer))
		}
	case errors.Is(err, net.ErrClosed), errors.Is(err, context.Canceled):
	default:
		if err.Error() != "EOF" {
			c.srv.log.Debug("policy connection ended", slog.String("peer", c.peer), slog.Any("error", err))
		}
	}
}

// decide runs the engine for one request and returns the verdict and the
// tag header to prepend, if any.
func (s *Server) decide(c *conn, req *Request) (rules.Verdict, *rules.Header) {
	ctx := context.Background()
	in := c.instanceFor(s, req)
	var prev *rules.Session // the previous message's session, same SMTP session
	if c.last != in {
		if c.last != nil && c.last != c.local {
			// The connection moved on to another message: the last one is
			// over, and its state can go.
			prev = c.last.sameSession(req)
			s.endInstance(c.last)
			s.instances.remove(c.last)
		}
		c.last = in
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.sess != nil && in.client != req.ClientAddress {
		in.reset()
	}
	if in.sess == nil {
		in.client, in.port = req.ClientAddress, req.ClientPort
		ip, err := rules.ParseClientIP(req.ClientAddress)
		if err != nil && req.ClientAddress != "" {
			s.log.Warn("policy request with a bad client_address; host lists are not applied",
				slog.String("peer", c.peer), slog.String("client_address", strconv.QuoteToASCII(truncate(req.ClientAddress, 100))))
			if s.onBadAddress != nil {
				s.onBadAddress()
			}
		}
		in.sess = rules.NewSession(ip, req.ClientName)
		if req.ReverseClientName != "" {
			// Postfix's PTR name, verified or not ("unknown": none); the
			// deny lists match it, as Domino does.
			in.sess.SetPTR(req.ReverseClientName)
		}
		// Ids an admin finds in Postfix's log: the queue id when known
		// (below), else client_address:client_port.
		in.sess.ID = req.Instance
		if req.ClientPort != "" && req.ClientAddress != "" {
			in.sess.ID = net.JoinHostPort(req.ClientAddress, req.ClientPort)
		}
		if prev != nil {
			// Another message of the same SMTP session: the connect-time
			// outcome carries over, and a refusal already given is not
			// logged (or counted by fail2ban) once more.
			in.sess.ContinueFrom(prev)
		}
	}
	sess := in.sess
	// A name of only spaces is no login: it must not exempt the session.
	sess.AuthUser = strings.TrimSpace(req.SASLUsername)
	if req.QueueID != "" {
		sess.ID = req.QueueID
	}
	e := s.engine

	state := req.ProtocolState
	var v rules.Verdict
	switch state {
	case "CONNECT":
		return e.Connect(ctx, sess), nil
	case "EHLO", "HELO":
		return in.helo(ctx, e, req, state), nil
	case "VRFY", "ETRN":
		return e.Command(ctx, sess, state), nil
	case "END-OF-MESSAGE":
		sess.NoteEndOfData()
		// Too late to prepend (Postfix's access(5)); only a connect-time
		// refusal still applies. The message is over.
		v = e.Connect(ctx, sess)
		e.EndMessage(sess)
		if in != c.local {
			s.instances.remove(in)
		}
		if c.last == in {
			c.last = nil
		}
		return v, nil
	case "MAIL", "RCPT", "DATA":
	default:
		s.log.Warn("policy request with an unknown protocol_state; answering DUNNO",
			slog.String("peer", c.peer), slog.String("protocol_state", truncate(state, 64)))
		return v, nil
	}
	// MAIL, RCPT and DATA: the stages before them run once per message
	// (with smtpd_delay_reject, Postfix asks only at RCPT); a refusal there
	// refuses this command too.
	v = in.helo(ctx, e, req, "")
	if mv := in.mail(ctx, e, req); !v.Action.Refuses() {
		v = keepShadow(mv, v)
	}
	if in.sticky != nil && !v.Action.Refuses() && !e.Exempt(sess) {
		v = *in.sticky
		v.Repeated = true
	}
	switch {
	case state == "MAIL":
		return v, nil
	case v.Action.Refuses():
		if state == "RCPT" {
			sess.Refused = append(sess.Refused, req.Recipient) // for the session log
		}
		return v, nil
	case state == "RCPT":
		v = keepShadow(e.Rcpt(ctx, sess, req.Recipient), v)
	default:
		v = keepShadow(e.Data(ctx, sess), v)
		in.dataSeen = true
	}
	if v.Action.Refuses() {
		return v, nil
	}
	// Tag headers: once per message, at the first accepted RCPT or DATA.
	if !in.tagsQueued {
		in.tagsQueued = true
		in.pending = append(in.pending[:0], e.Tags(sess)...)
	}
	if len(in.pending) > 0 && !v.Shadow { // a WARN first; the header at the next request
		sess.NoteTagsAdded()
		h := in.pending[0]
		in.pending = in.pending[1:]
		return v, &h
	}
	return v, nil
}

// sameSession returns the instance's session when the request comes from
// the same SMTP session (same client address and port; Postfix sends the
// port since 2.5), else nil.
func (in *instance) sameSession(req *Request) *rules.Session {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.sess == nil || req.ClientPort == "" || in.port != req.ClientPort || in.client != req.ClientAddress {
		return nil
	}
	return in.sess
}

// endInstance tells the engine that an instance's message is over (the
// session log records it); it does nothing for nil or an instance already
// ended.
func (s *Server) endInstance(in *instance) {
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.sess != nil {
		s.engine.EndMessage(in.sess)
	}
}

// instanceFor returns the message state of a request: by its instance
// attribute, or the connection's own when the client sends none.
func (c *conn) instanceFor(s *Server, req *Request) *instance {
	if req.Instance == "" {
		if c.local == nil {
			c.local = &instance{}
		}
		if c.last == c.local && c.local.sess != nil && c.local.client != req.ClientAddress {
			s.endInstance(c.local)
		}
		return c.local
	}
	in, evicted := s.instances.get(req.Instance)
	for _, old := range evicted {
		s.endInstance(old) // expired or pushed out: its message is long over
	}
	return in
}

// helo runs the HELO stage once per message; cmd is the protocol_state
// when the policy is asked at HELO/EHLO, else derived from protocol_name.
func (in *instance) helo(ctx context.Context, e *rules.Engine, req *Request, cmd string) rules.Verdict {
	if in.heloDone {
		return rules.Verdict{Stage: rules.StageHelo}
	}
	if cmd == "" {
		cmd = "HELO"
		if strings.EqualFold(req.ProtocolName, "ESMTP") {
			cmd = "EHLO"
		}
	}
	in.heloDone = true
	// A refused HELO is remembered by the engine session and repeated at
	// every later request of the message.
	return e.Helo(ctx, in.sess, cmd, req.HeloName)
}

// mail runs the MAIL FROM stage once per message; later calls return an
// accept (a refusal is kept in in.sticky).
func (in *instance) mail(ctx context.Context, e *rules.Engine, req *Request) rules.Verdict {
	if in.mailDone {
		return rules.Verdict{Stage: rules.StageMail}
	}
	in.mailDone = true
	v := e.Mail(ctx, in.sess, req.Sender)
	if v.Action.Refuses() && v.Stage != rules.StageConnect {
		sticky := v // only a refusal goes to the heap
		in.sticky = &sticky
	}
	return v
}

// keepShadow returns v, carrying over the shadowed refusal of an earlier
// stage answered in the same request (prev), so that its WARN is not lost
// when the later stage accepts. A refusal, or a shadow of v's own, wins.
func keepShadow(v, prev rules.Verdict) rules.Verdict {
	if prev.Shadow && !v.Shadow && !v.Action.Refuses() {
		v.Shadow = true
		v.Code, v.EnhancedCode, v.Text, v.Control, v.Reason = prev.Code, prev.EnhancedCode, prev.Text, prev.Control, prev.Reason
	}
	return v
}
