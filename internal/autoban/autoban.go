// Package autoban bans clients that are refused too often ([autoban]):
// it watches the engine's verdicts, counts each client's (or its
// network's) refusals in the state backend — so across the whole fleet —
// and bans the client once it reaches [autoban] refusals within
// [autoban] within. Counting is done off the request path, by one
// goroutine fed through a bounded queue: a verdict never waits on the
// backend, and when the backend fails counting pauses (refusals are not
// counted) while mail flows on.
package autoban

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// DefaultQueue is how many refusals may wait to be counted.
const DefaultQueue = 4096

// Backend is what the observer needs of the state backend.
type Backend interface {
	CountRefusal(ctx context.Context, key string, within time.Duration, detail string) (int, []string, error)
	ResetRefusals(ctx context.Context, key string) error
	AddBan(ctx context.Context, b state.Ban) error
	Banned(ip netip.Addr) (state.Ban, bool)
}

// Options configure an Observer.
type Options struct {
	Backend Backend
	// Config returns the [autoban] section in force (it changes with
	// reloads).
	Config func() rules.AutobanConfig
	// Relay names this relay in the bans it makes ("autoban@relay").
	Relay  string
	Logger *slog.Logger
	// Now is the clock of the bans; nil means time.Now.
	Now func() time.Time
	// OnBan, when set, hears every ban made (the fail2ban log, counters).
	OnBan func(b state.Ban)
	// Queue bounds the refusals waiting to be counted; DefaultQueue when 0.
	Queue int
}

// Observer is a rules.Observer that bans repeat offenders.
type Observer struct {
	o       Options
	queue   chan refusal
	dropped atomic.Uint64
	counted atomic.Uint64 // refusals taken off the queue and handled
}

type refusal struct {
	ip     netip.Addr
	detail string
}

var _ rules.Observer = (*Observer)(nil)

// New returns an observer; Run must run for it to count.
func New(o Options) *Observer {
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Observer{o: o, queue: make(chan refusal, o.Queue)}
}

// Counts reports whether a verdict counts towards an automatic ban: a
// refusal given (5xx, or a 421 that ends the session), once, to a client
// neither whitelisted nor authenticated; a refusal by a ban does not
// count again.
func Counts(s *rules.Session, v *rules.Verdict) bool {
	switch {
	case !v.Action.Refuses() || v.Repeated || v.Shadow:
		return false
	case v.Code < 500 && v.Code != 421:
		return false
	case v.Control == rules.ControlBans:
		return false
	case !s.ClientIP.IsValid() || s.Authenticated() || s.ConnectResult().Whitelisted:
		return false
	}
	return true
}

// Verdict implements rules.Observer: a refusal that counts is queued,
// never waited for; a full queue drops it (and counts the drop).
func (o *Observer) Verdict(s *rules.Session, v rules.Verdict) {
	if !Counts(s, &v) || !o.o.Config().Enabled {
		return
	}
	detail := v.Stage.String() + " " + strconv.Itoa(v.Code) + " " + string(v.Control) + ": " + v.Reason
	if len(detail) > 200 {
		detail = detail[:200]
	}
	select {
	case o.queue <- refusal{ip: s.ClientIP, detail: detail}:
	default:
		o.dropped.Add(1)
	}
}

// MessagesWanted implements rules.Observer.
func (o *Observer) MessagesWanted() bool { return false }

// Message implements rules.Observer.
func (o *Observer) Message(*rules.MessageRecord) {}

// Dropped returns how many refusals were not counted because the queue
// was full.
func (o *Observer) Dropped() uint64 { return o.dropped.Load() }

// Run counts the queued refusals until ctx is done.
func (o *Observer) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-o.queue:
			o.count(ctx, r)
			o.counted.Add(1)
		}
	}
}

// Network returns the prefix an automatic ban of ip covers.
func Network(ip netip.Addr, cfg rules.AutobanConfig) netip.Prefix {
	return rules.ClientNetwork(ip, cfg.NetV4, cfg.NetV6)
}

func (o *Observer) count(ctx context.Context, r refusal) {
	cfg := o.o.Config()
	if !cfg.Enabled {
		return
	}
	net := Network(r.ip, cfg)
	if _, banned := o.o.Backend.Banned(r.ip); banned {
		return
	}
	key := "ab:" + net.String()
	n, recent, err := o.o.Backend.CountRefusal(ctx, key, cfg.Within, r.detail)
	if err != nil {
		return // the backend warns; counting pauses
	}
	if n < cfg.Refusals {
		return
	}
	now := o.o.Now()
	b := state.Ban{
		Prefix:   net,
		Reason:   fmt.Sprintf("automatic ban: %d refusals within %s", n, cfg.Within),
		Creator:  "autoban@" + o.o.Relay,
		Created:  now,
		Expires:  now.Add(cfg.BanFor),
		Refusals: recent,
	}
	if err := o.o.Backend.AddBan(ctx, b); err != nil {
		o.o.Logger.Warn("automatic ban not made", slog.String("prefix", net.String()), slog.Any("error", err))
		return
	}
	_ = o.o.Backend.ResetRefusals(ctx, key)
	o.o.Logger.Warn("client banned automatically",
		slog.String("prefix", net.String()),
		slog.Int("refusals", n),
		slog.Duration("within", cfg.Within),
		slog.Duration("ban_for", cfg.BanFor),
		slog.String("last_refusal", r.detail))
	if o.o.OnBan != nil {
		o.o.OnBan(b)
	}
}
