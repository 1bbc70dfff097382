package fail2ban

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// Defaults for the Options fields left zero.
const (
	// DefaultDNSBLDelay is how long a DNS blacklist refusal is held: the
	// DNS client's hit-rate window (one minute, dnsclient.HitRateWindow)
	// in which a list listing the world is suspended, plus a margin for
	// the probe that follows.
	DefaultDNSBLDelay = 90 * time.Second
	// DefaultMaxHeld bounds the refusals held; past it the oldest is
	// dropped and counted.
	DefaultMaxHeld = 100_000
	// DefaultTick is how often Run writes out the refusals whose delay has
	// passed.
	DefaultTick = time.Second
)

// Suspensions tells whether a DNS list zone was suspended at any time
// since t. *rules.Counters implements it.
type Suspensions interface {
	SuspendedSince(zone string, t time.Time) bool
}

var _ Suspensions = (*rules.Counters)(nil)

// Options configure an Observer; every field may be left zero.
type Options struct {
	// Now is the clock of the lines' timestamps and of the hold; nil
	// means time.Now. It must be the clock of Suspensions too.
	Now func() time.Time
	// Suspensions, when set, turns holding on: DNS blacklist refusals
	// wait DNSBLDelay and are dropped if their zone was suspended since.
	// nil writes them at once, like every other refusal.
	Suspensions Suspensions
	// DNSBLDelay is how long a DNS blacklist refusal is held;
	// DefaultDNSBLDelay when 0.
	DNSBLDelay time.Duration
	// MaxHeld bounds the refusals held; DefaultMaxHeld when 0.
	MaxHeld int
	// Tick is how often Run writes out what is due; DefaultTick when 0.
	Tick time.Duration
}

// Observer writes a line for every refusal a client is given, once per
// refusal: a connect-time or HELO refusal repeated at later commands is
// written once. DNS blacklist refusals are held (see the package doc):
// run Run to write them out as they come due, and Close at shutdown to
// write out what is still held.
type Observer struct {
	out     *logfile.File
	log     *slog.Logger
	now     func() time.Time
	sus     Suspensions
	delay   time.Duration
	maxHeld int
	tick    time.Duration

	mu       sync.Mutex
	held     []heldLine // oldest first, from head
	head     int
	closed   bool // Close was called: nothing is held any more
	flooding bool // the bound was hit; cleared when the queue drains

	droppedSuspended atomic.Uint64
	droppedOverflow  atomic.Uint64
}

// heldLine is a DNS blacklist refusal waiting to be written.
type heldLine struct {
	at   time.Time // the refusal's time, in the line too
	zone string
	line string
}

var _ rules.Observer = (*Observer)(nil)

// New returns an observer writing to out. opts may be nil: then nothing is
// held, every refusal is written at once.
func New(out *logfile.File, log *slog.Logger, opts *Options) *Observer {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DNSBLDelay <= 0 {
		o.DNSBLDelay = DefaultDNSBLDelay
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = DefaultMaxHeld
	}
	if o.Tick <= 0 {
		o.Tick = DefaultTick
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Observer{out: out, log: log, now: o.Now, sus: o.Suspensions,
		delay: o.DNSBLDelay, maxHeld: o.MaxHeld, tick: o.Tick}
}

// Verdict writes a line for a refusal, or holds it when a DNS blacklist
// gave it. Only what the client is to blame for is a line: a permanent
// refusal (5xx) or a 421 that ends the session. Other temporary answers
// are not: "452 too many recipients" is normal SMTP flow (one newsletter
// must not get a list server banned), and a 450 because DNS could not
// answer (verify_host_name, verify_domain) is our resolver's trouble.
func (o *Observer) Verdict(s *rules.Session, v rules.Verdict) {
	if !v.Action.Refuses() || v.Repeated || !s.ClientIP.IsValid() || !o.out.Enabled() {
		return
	}
	if v.Code < 500 && v.Code != 421 {
		return
	}
	at := o.now()
	line := Line(at, s.ClientIP.String(), string(v.Control)+": "+v.Reason)
	if v.Control == rules.ControlDNSBlacklist && o.sus != nil {
		if l := s.ConnectResult().DNSBL; l != nil && l.Zone != "" && o.hold(heldLine{at: at, zone: l.Zone, line: line}) {
			return
		}
	}
	o.write(line)
}

// hold queues h; false when the observer is closed (write it at once).
func (o *Observer) hold(h heldLine) bool {
	flood := false
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false
	}
	if len(o.held)-o.head >= o.maxHeld {
		o.popLocked()
		o.droppedOverflow.Add(1)
		flood = !o.flooding
		o.flooding = true
	}
	o.held = append(o.held, h)
	o.mu.Unlock()
	if flood {
		// Once per flood: flooding is cleared when the queue drains.
		o.log.Warn("fail2ban log: too many DNS blacklist refusals held; dropping the oldest (counted)",
			slog.Int("max", o.maxHeld))
	}
	return true
}

// popLocked drops the oldest held line and returns it.
func (o *Observer) popLocked() heldLine {
	h := o.held[o.head]
	o.held[o.head] = heldLine{}
	o.head++
	if o.head == len(o.held) {
		o.held, o.head = o.held[:0], 0
	} else if o.head > 1024 && o.head*2 > len(o.held) {
		o.held = append(o.held[:0], o.held[o.head:]...)
		o.head = 0
	}
	return h
}

// Run writes out the held refusals as their delay passes, every
// Options.Tick, until ctx is done. It does not write what is still held
// then: Close does.
func (o *Observer) Run(ctx context.Context) {
	t := time.NewTicker(o.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			o.Flush()
		}
	}
}

// Flush writes out the held refusals whose delay has passed, dropping
// those whose zone was suspended since the refusal. Run calls it.
func (o *Observer) Flush() { o.release(false) }

// Close writes out every refusal still held whose zone has not been
// suspended since, delay passed or not; refusals that come later are
// written at once. Call it when the servers have drained, before the log
// file is closed. It is safe to call more than once.
func (o *Observer) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.release(true)
}

// release writes out the held lines that are due (all of them when all
// is set).
func (o *Observer) release(all bool) {
	now := o.now()
	var due []heldLine
	o.mu.Lock()
	for o.head < len(o.held) && (all || !o.held[o.head].at.Add(o.delay).After(now)) {
		due = append(due, o.popLocked())
	}
	if o.flooding && (len(o.held)-o.head)*2 < o.maxHeld {
		o.flooding = false
	}
	o.mu.Unlock()

	dropped := map[string]int{}
	for _, h := range due {
		if o.sus.SuspendedSince(h.zone, h.at) {
			o.droppedSuspended.Add(1)
			dropped[h.zone]++
			continue
		}
		o.write(h.line)
	}
	for zone, n := range dropped {
		o.log.Info("fail2ban log: DNS blacklist refusals not written: their list was suspended soon after (it may have listed every client)",
			slog.String("zone", zone), slog.Int("refusals", n))
	}
}

func (o *Observer) write(line string) {
	if !o.out.Enabled() {
		return
	}
	// A failed write is queued, retried and counted by the log file
	// itself, which reports it (rate-limited).
	o.out.Write([]byte(line))
}

// Stats are the observer's counts.
type Stats struct {
	// Held is the number of DNS blacklist refusals waiting.
	Held int
	// DroppedSuspended counts held refusals not written because their
	// zone was suspended before they came due.
	DroppedSuspended uint64
	// DroppedOverflow counts held refusals dropped because MaxHeld were
	// waiting.
	DroppedOverflow uint64
}

// Stats returns the observer's counts.
func (o *Observer) Stats() Stats {
	o.mu.Lock()
	held := len(o.held) - o.head
	o.mu.Unlock()
	return Stats{Held: held, DroppedSuspended: o.droppedSuspended.Load(), DroppedOverflow: o.droppedOverflow.Load()}
}

// WriteBan writes the line of a ban made by [autoban], at once, for the
// network banned (its address for a single host), so that fail2ban can
// block it in the firewall too.
func (o *Observer) WriteBan(p netip.Prefix, reason string) {
	if !o.out.Enabled() {
		return
	}
	ip := p.Addr().String()
	if p.Bits() != p.Addr().BitLen() {
		ip = p.String()
	}
	o.write(Line(o.now(), ip, reason))
}

// Message implements rules.Observer; the fail2ban log keeps refusals only.
func (o *Observer) Message(*rules.MessageRecord) {}

// MessagesWanted implements rules.Observer: never.
func (o *Observer) MessagesWanted() bool { return false }
