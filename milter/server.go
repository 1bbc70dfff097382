// Package milter serves the rules engine over the milter protocol (version
// 6, as Postfix 3.7+ and Sendmail 8.14+ speak it) with the raw server of
// github.com/d--j/go-milter. The package only translates: it fills a
// rules.Session from the callbacks and macros, calls the engine stage of
// each callback, and turns the verdict into a milter response; at end of
// message it adds the tag headers and removes forged copies.
//
// Every MTA connection goes through a guard (guard.go) that checks each
// packet's framing and required NULs before go-milter reads it, so a
// malformed packet ends its own connection instead of panicking go-milter
// (which would end the process) or making it allocate what the packet
// announces. We check in front of go-milter rather than fork it: there is
// no copy of a third-party library to maintain, and the check holds
// whatever go-milter version sits behind it.
package milter

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/smtp-interceptor/smtp-interceptor/internal/listen"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = gomilter.ErrServerClosed

// Macros the engine needs, requested at negotiation (MILTER_README:
// "Milter macros"). When the MTA does not send one, the callback arguments
// stand in for it.
const (
	macroClientAddr = "{client_addr}"
	macroClientName = "{client_name}" // verified name, "unknown" when none (Postfix)
	macroClientPtr  = "{client_ptr}"  // unverified reverse name
	macroQueueID    = "i"
	macroAuthAuthen = "{auth_authen}"
)

// Actions and protocol steps negotiated: add and change (delete) headers;
// no body; no replies to header events. Everything else is used.
const (
	actions  = gomilter.OptAddHeader | gomilter.OptChangeHeader
	protocol = gomilter.OptNoBody | gomilter.OptNoHeaderReply | gomilter.OptNoEOH
)

// Options tune a Server; every field may be left zero.
type Options struct {
	// Logger receives connection and macro logs; nil discards them.
	Logger *slog.Logger
	// WriteTimeout bounds each write to the MTA (default 10s).
	WriteTimeout time.Duration
	// OnMalformed, when set, is called once for each malformed packet
	// (each ends its connection), with the reason: one of a fixed set of
	// short texts without client data, fit for a metric label.
	OnMalformed func(reason string)
	// OnBadAddress, when set, is called once for each session whose
	// client address the MTA sent but that cannot be parsed.
	OnBadAddress func()
	// OnCallback, when set, is called after each callback (connect, HELO,
	// MAIL, RCPT, DATA, ...) with the time it took.
	OnCallback func(d time.Duration)
}

// Server is a milter server. Serve may be called on several listeners at
// once; Shutdown stops them all.
type Server struct {
	engine *rules.Engine
	log    *slog.Logger
	srv    *gomilter.Server
	guard  *guard

	onBadAddress func()
	onCallback   func(time.Duration)
}

// New returns a milter server answering with engine's verdicts.
func New(engine *rules.Engine, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	s := &Server{engine: engine, log: opts.Logger, onBadAddress: opts.OnBadAddress, onCallback: opts.OnCallback,
		guard: newGuard(opts.Logger, opts.OnMalformed, func() time.Duration { return engine.Config().Server.MilterIdleTimeout })}
	// No read timeout in go-milter: the guard sets the idle deadline
	// before each packet, from the configuration in force, so a reload
	// changes it for the sessions already open.
	s.srv = gomilter.NewServer(append(NegotiationOptions(0),
		gomilter.WithMilter(func() gomilter.Milter { return newSession(s) }),
		gomilter.WithWriteTimeout(opts.WriteTimeout),
	)...)
	return s
}

// NegotiationOptions are the go-milter server options that set what the
// milter negotiates with the MTA: its actions, protocol steps and macros,
// and readTimeout, go-milter's longest wait between two callbacks of one
// SMTP session (0: none; Server leaves it to its guard). The do-nothing milter of "bench null-milter" uses them too, so
// the two are measured on equal terms.
func NegotiationOptions(readTimeout time.Duration) []gomilter.Option {
	return []gomilter.Option{
		gomilter.WithActions(actions),
		gomilter.WithProtocols(protocol),
		gomilter.WithMacroRequest(gomilter.StageConnect, []string{macroClientAddr, macroClientName, macroClientPtr}),
		gomilter.WithMacroRequest(gomilter.StageMail, []string{macroQueueID, macroAuthAuthen}),
		gomilter.WithMacroRequest(gomilter.StageEOM, []string{macroQueueID}),
		gomilter.WithReadTimeout(readTimeout),
	}
}

// Serve accepts MTA connections on ln until Shutdown. TCP peers outside
// [server] allow are logged and closed; every packet of the others is
// checked before go-milter reads it.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(s.guard.listener(listen.Allow(ln, s.allowed, func(ip netip.Addr) {
		s.log.Warn("milter client not allowed by [server] allow; closing", slog.String("peer", ip.String()))
	})))
}

func (s *Server) allowed(ip netip.Addr) bool {
	_, ok := s.engine.Config().Server.Allow.Match(ip, "")
	return ok
}

// Shutdown stops accepting and ends the MTA connections: at once those
// waiting for their next packet with nothing of it received, the busy ones
// right after their current reply. It returns when all have ended, or
// when ctx does; then it closes the remaining ones and returns ctx's
// error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.guard.shutdown()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// RouteLibraryWarnings sends go-milter's own warnings (a write error, an
// MTA that sent something it cannot handle) to log at warn level, instead
// of the standard library's log package, so a JSON log stays JSON.
// go-milter keeps its hook in a package variable: this sets it for the
// whole process, so serve calls it once, at start.
func RouteLibraryWarnings(log *slog.Logger) {
	gomilter.LogWarning = func(format string, v ...any) {
		log.Warn("milter library warning", slog.String("detail", fmt.Sprintf(format, v...)))
	}
}

// observe reports a callback's duration to OnCallback.
func (s *Server) observe(start time.Time) {
	if s.onCallback != nil {
		s.onCallback(time.Since(start))
	}
}
