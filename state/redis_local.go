package state

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Rate limits of a fleet, decided locally between flushes.
//
// A GCRA script on Redis for every request costs a round trip and some
// 15 µs of Redis's time. For a limit of at least localMinLimit units a
// period, a relay decides on its own while the key is far from its
// limit: it admits a request when, by what it knows (the fleet's TAT as
// Redis last reported it, plus what it admitted since), at most a
// localShare-th of the limit's burst is used, and it adds those units to
// Redis in one batch every localFlush, learning the fleet's TAT in
// return. Past that share, or for smaller limits, every request is
// decided on Redis, exactly, carrying the units admitted locally first.
//
// The error is bounded: the fleet exceeds a limit only if, on one key,
// the other relays admit more than (1 − 1/localShare) of the limit's
// burst within one flush interval (50 ms) unseen by this relay — a burst
// rate of at least 15,000 units a second for the smallest limit decided
// locally — and then by at most a localShare-th of the burst per relay.
// Below that rate the fleet admits what one exact limiter would, give or
// take the requests of one flush interval.
const (
	localMinLimit = 1000
	localShare    = 4
	localFlush    = 50 * time.Millisecond
	localMaxKeys  = 200_000
	flushChunk    = 256 // keys per flush script
)

type localEntry struct {
	key   string // the Redis key
	limit int
	per   time.Duration
	// tat is the fleet's TAT as Redis last reported it, on this relay's
	// clock; pending the units admitted here since, not yet sent;
	// sending those in a flush in flight.
	tat              time.Time
	pending, sending int
	used             time.Time
}

// localLimits holds a relay's local view of its rate-limit keys.
type localLimits struct {
	mu    sync.Mutex
	m     map[string]*localEntry
	dirty []*localEntry
	now   func() time.Time
}

func newLocalLimits() *localLimits {
	return &localLimits{m: make(map[string]*localEntry), now: time.Now}
}

// allow decides locally when it may (ok true), or leaves the decision to
// the exact path (ok false) after moving the key's pending units into
// it: they are then sent with that request, as forced units.
func (l *localLimits) allow(ctx context.Context, r *Redis, key string, limit int, per time.Duration, cost int) (Decision, bool, error) {
	if limit < localMinLimit || cost == 0 || !r.up.Load() {
		return Decision{}, false, nil
	}
	emission := per / time.Duration(limit)
	now := l.now()
	l.mu.Lock()
	e := l.m[key]
	if e == nil {
		if len(l.m) >= localMaxKeys {
			l.mu.Unlock()
			return Decision{}, false, nil
		}
		e = &localEntry{key: r.o.Prefix + "rate:" + key, limit: limit, per: per}
		l.m[key] = e
	}
	e.limit, e.per, e.used = limit, per, now
	base := e.tat
	if base.Before(now) {
		base = now
	}
	after := base.Add(emission * time.Duration(e.pending+e.sending+cost))
	if after.Sub(now) <= per/localShare {
		if e.pending == 0 {
			l.dirty = append(l.dirty, e)
		}
		e.pending += cost
		l.mu.Unlock()
		return Decision{Allowed: true, Remaining: int((per - after.Sub(now)) / emission)}, true, nil
	}
	// Near the limit: decide on Redis, with the units admitted here.
	forced := e.pending
	e.pending = 0
	e.sending += forced
	l.mu.Unlock()
	res, err := r.allow(ctx, e.key, limit, max(1, per.Microseconds()), cost, forced)
	l.mu.Lock()
	e.sending -= forced
	if err == nil && len(res) == 5 {
		e.tat = l.now().Add(time.Duration(res[3]-res[4]) * time.Microsecond)
	}
	l.mu.Unlock()
	if err != nil {
		return Decision{}, true, err
	}
	return Decision{Allowed: res[0] == 1, Remaining: int(res[1]), RetryAfter: time.Duration(res[2]) * time.Microsecond}, true, nil
}

// run flushes the local counts every localFlush and forgets the keys
// not used for a period, until r stops.
func (l *localLimits) run(r *Redis) {
	t := time.NewTicker(localFlush)
	defer t.Stop()
	sweep := l.now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		l.flush(r)
		if now := l.now(); now.Sub(sweep) > 10*time.Second {
			l.sweep(now)
			sweep = now
		}
	}
}

// flush sends the pending units of every dirty key, many keys a script
// (one script a key with Cluster, whose keys live on several servers).
// Units that cannot be sent (Redis down) are dropped: rate limits fail
// open while Redis is away.
func (l *localLimits) flush(r *Redis) {
	l.mu.Lock()
	batch := l.dirty
	l.dirty = nil
	// What is sent is copied under the lock: allow may change a rule's
	// limit and period (a reload) meanwhile.
	type send struct {
		key       string
		limit, n  int
		perMicros int64
	}
	sends := make([]send, len(batch))
	units := make([]int, len(batch))
	for i, e := range batch {
		units[i] = e.pending
		sends[i] = send{key: e.key, limit: e.limit, n: e.pending, perMicros: max(1, e.per.Microseconds())}
		e.sending += e.pending
		e.pending = 0
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	_, cluster := r.client.(*redis.ClusterClient)
	ctx, cancel := context.WithTimeout(r.ctx, 20*r.o.Timeout)
	defer cancel()
	tats := make([]int64, len(batch))
	var now int64
	ok := make([]bool, len(batch))
	if cluster {
		pipe := r.client.Pipeline()
		cmds := make([]*redis.Cmd, len(sends))
		for i, x := range sends {
			cmds[i] = scriptGCRA.Run(ctx, pipe, []string{x.key}, x.limit, x.perMicros, 0, x.n)
		}
		_, _ = pipe.Exec(ctx)
		for i, c := range cmds {
			if v, err := c.Int64Slice(); err == nil && len(v) == 5 {
				tats[i], now, ok[i] = v[3], v[4], true
			}
		}
	} else {
		for start := 0; start < len(batch); start += flushChunk {
			end := min(start+flushChunk, len(batch))
			keys := make([]string, 0, end-start)
			args := make([]any, 0, 3*(end-start))
			for _, x := range sends[start:end] {
				keys = append(keys, x.key)
				args = append(args, x.limit, x.perMicros, x.n)
			}
			v, err := scriptGCRAAdd.Run(ctx, r.client, keys, args...).Int64Slice()
			if err != nil || len(v) != 1+len(keys) {
				if err != nil && !isReply(err) {
					r.setDown(err)
				}
				continue
			}
			now = v[0]
			for i := start; i < end; i++ {
				tats[i], ok[i] = v[1+i-start], true
			}
		}
	}
	local := l.now()
	l.mu.Lock()
	for i, e := range batch {
		e.sending -= units[i]
		if ok[i] {
			e.tat = local.Add(time.Duration(tats[i]-now) * time.Microsecond)
		}
	}
	l.mu.Unlock()
}

// sweep forgets keys whose last use is more than a period ago and that
// have nothing to send: their TAT has run out anyway.
func (l *localLimits) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, e := range l.m {
		if e.pending == 0 && e.sending == 0 && now.Sub(e.used) > e.per {
			delete(l.m, k)
		}
	}
}
