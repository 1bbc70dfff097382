package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// MemoryOptions configures OpenMemory.
type MemoryOptions struct {
	// File is the bbolt file that keeps the bans across restarts; "" keeps
	// them in memory only.
	File string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the backend's log; nil means slog.Default().
	Logger *slog.Logger
	// SweepInterval is how often expired bans, refusal windows, rate
	// limits, greylist triplets and statistics are dropped; 0 means one
	// minute.
	SweepInterval time.Duration
}

// Memory is the Backend of a single relay: everything lives in the
// process, the bans optionally persisted to a file. It remembers at most
// 1,000,000 greylist triplets: past that, a new triplet passes at once
// without being remembered (Grey with Pass and New) until the sweep has
// dropped expired ones, so that a full table never blocks mail; and it
// counts the passes of at most 100,000 networks (a new network past that
// is not whitelisted automatically).
type Memory struct {
	o       MemoryOptions
	replica *replica

	banMu sync.Mutex // orders file writes with replica updates
	file  *banFile

	mu       sync.Mutex
	refusals map[string]*refusalLog
	rates    map[string]time.Time // key -> GCRA theoretical arrival time
	stats    map[string]statsDoc

	// greyMu guards the greylist apart from mu, so that the sweep of a
	// large greylist (in chunks) never holds up rate limits.
	greyMu     sync.Mutex
	grey       map[string]greyEntry
	greyPass   map[string]*greyPassLog
	greyMax    int // maxGreyTriplets; tests lower it
	greyNetMax int // maxGreyNetworks; tests lower it

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Backend = (*Memory)(nil)

// refusalLog is the sliding window of one refusal key.
type refusalLog struct {
	at     []time.Time // oldest first
	detail []string    // same indexes as at
	within time.Duration
}

type statsDoc struct {
	doc     []byte
	expires time.Time
}

// OpenMemory opens a Memory backend, loading the bans from o.File when set.
// It fails only when the file cannot be opened at all (locked by another
// process, permission denied); an unreadable file is moved aside and
// replaced by an empty one, with an error in the log.
func OpenMemory(o MemoryOptions) (*Memory, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("backend", "memory")
	if o.SweepInterval <= 0 {
		o.SweepInterval = time.Minute
	}
	m := &Memory{
		o:          o,
		replica:    newReplica(o.Now),
		refusals:   make(map[string]*refusalLog),
		rates:      make(map[string]time.Time),
		stats:      make(map[string]statsDoc),
		grey:       make(map[string]greyEntry),
		greyPass:   make(map[string]*greyPassLog),
		greyMax:    maxGreyTriplets,
		greyNetMax: maxGreyNetworks,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if o.File != "" {
		f, bans, err := openBanFile(o.File, o.Now(), o.Logger)
		if err != nil {
			return nil, err
		}
		m.file = f
		m.replica.replace(bans)
		o.Logger.Info("bans loaded", "file", o.File, "bans", len(bans))
	}
	go m.sweeper()
	return m, nil
}

func (m *Memory) sweeper() {
	defer close(m.done)
	t := time.NewTicker(m.o.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep drops what has expired: bans (from the file too), refusal windows,
// rate limit states that are back to full, greylist triplets and pass
// windows, statistics.
func (m *Memory) sweep() {
	now := m.o.Now()
	m.banMu.Lock()
	gone := m.replica.dropExpired(now)
	if m.file != nil {
		if err := m.file.del(gone...); err != nil {
			m.o.Logger.Error("state: drop expired bans from file", "err", err)
		}
	}
	m.banMu.Unlock()

	m.sweepGrey(now.UnixNano())

	m.mu.Lock()
	defer m.mu.Unlock()
	for k, l := range m.refusals {
		if !now.Before(l.at[len(l.at)-1].Add(l.within)) {
			delete(m.refusals, k)
		}
	}
	for k, tat := range m.rates {
		if !now.Before(tat) {
			delete(m.rates, k)
		}
	}
	for k, s := range m.stats {
		if !now.Before(s.expires) {
			delete(m.stats, k)
		}
	}
}

// AddBan implements Backend.
func (m *Memory) AddBan(ctx context.Context, b Ban) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := prepareBan(b, m.o.Now())
	if err != nil {
		return err
	}
	m.banMu.Lock()
	defer m.banMu.Unlock()
	if m.file != nil {
		if err := m.file.put(b); err != nil {
			return err
		}
	}
	m.replica.put(b)
	return nil
}

// RemoveBan implements Backend.
func (m *Memory) RemoveBan(ctx context.Context, p netip.Prefix) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	p, err := normPrefix(p)
	if err != nil {
		return false, err
	}
	m.banMu.Lock()
	defer m.banMu.Unlock()
	if _, ok := m.replica.get(p); !ok {
		return false, nil
	}
	if m.file != nil {
		if err := m.file.del(p); err != nil {
			return false, err
		}
	}
	return m.replica.del(p), nil
}

// Bans implements Backend.
func (m *Memory) Bans() []Ban { return m.replica.list() }

// Banned implements Backend.
func (m *Memory) Banned(ip netip.Addr) (Ban, bool) { return m.replica.banned(ip) }

// CountRefusal implements Backend.
func (m *Memory) CountRefusal(ctx context.Context, key string, within time.Duration, detail string) (int, []string, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	if err := checkWindow(key, within); err != nil {
		return 0, nil, err
	}
	now := m.o.Now()
	cut := now.Add(-within)
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.refusals[key]
	if l == nil {
		l = &refusalLog{}
		m.refusals[key] = l
	}
	l.within = within
	// Keep what is strictly inside the window, as ZREMRANGEBYSCORE
	// -inf cut does on Redis.
	i := 0
	for i < len(l.at) && !l.at[i].After(cut) {
		i++
	}
	if len(l.at)-i >= maxRefusals {
		i = len(l.at) - maxRefusals + 1
	}
	if i > 0 {
		l.at = slices.Delete(l.at, 0, i)
		l.detail = slices.Delete(l.detail, 0, i)
	}
	l.at = append(l.at, now)
	l.detail = append(l.detail, detail)
	n := len(l.at)
	return n, slices.Clone(l.detail[max(0, n-maxRecent):]), nil
}

// ResetRefusals implements Backend.
func (m *Memory) ResetRefusals(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.refusals, key)
	m.mu.Unlock()
	return nil
}

// Allow implements Backend with GCRA: the state of a key is its
// theoretical arrival time (TAT); a request of cost c is allowed when
// TAT + c·T − limit·T ≤ now, T = per/limit being the emission interval,
// and then moves TAT to max(TAT, now) + c·T.
func (m *Memory) Allow(ctx context.Context, key string, limit int, per time.Duration, cost int) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	if err := checkLimit(limit, per, cost); err != nil {
		return Decision{}, err
	}
	now := m.o.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	tat, ok := m.rates[key]
	if !ok || tat.Before(now) {
		tat = now
	}
	d, newTAT := gcra(now.Sub(tat), limit, per, cost)
	if d.Allowed && cost > 0 {
		m.rates[key] = tat.Add(newTAT)
	}
	return d, nil
}

// gcra decides a request given lag = now − TAT (≤ 0) and returns the
// decision and the new TAT relative to the old one.
func gcra(lag time.Duration, limit int, per time.Duration, cost int) (Decision, time.Duration) {
	emission := per / time.Duration(limit)
	if emission <= 0 {
		emission = 1
	}
	increment := emission * time.Duration(cost)
	// now − allowAt, allowAt = TAT + increment − per
	diff := lag - increment + per
	if diff < 0 {
		avail := (lag + per) / emission
		return Decision{Allowed: false, Remaining: int(max(avail, 0)), RetryAfter: -diff}, 0
	}
	return Decision{Allowed: true, Remaining: int(diff / emission)}, increment
}

// PublishStats implements Backend.
func (m *Memory) PublishStats(ctx context.Context, relay string, doc []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if relay == "" {
		return errors.New("state: empty relay name")
	}
	if ttl <= 0 {
		return fmt.Errorf("state: stats ttl %s is not positive", ttl)
	}
	m.mu.Lock()
	m.stats[relay] = statsDoc{doc: slices.Clone(doc), expires: m.o.Now().Add(ttl)}
	m.mu.Unlock()
	return nil
}

// FleetStats implements Backend.
func (m *Memory) FleetStats(ctx context.Context) (map[string][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := m.o.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]byte, len(m.stats))
	for k, s := range m.stats {
		if now.Before(s.expires) {
			out[k] = slices.Clone(s.doc)
		}
	}
	return out, nil
}

// Up implements Backend: Memory is always up.
func (m *Memory) Up() bool { return true }

// Name implements Backend.
func (m *Memory) Name() string { return "memory" }

// Close implements Backend: it stops the sweeper and closes the file.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
		if m.file != nil {
			m.banMu.Lock()
			m.closeErr = m.file.close()
			m.banMu.Unlock()
		}
	})
	return m.closeErr
}

// sizes reports how many keys each map holds, for the tests of sweeping.
func (m *Memory) sizes() (bans, refusals, rates, stats int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.replica.size(), len(m.refusals), len(m.rates), len(m.stats)
}
