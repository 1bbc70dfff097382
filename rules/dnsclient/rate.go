package dnsclient

import (
	"net/netip"
	"time"
)

// The hit-rate rule suspends a list at once, without waiting for the next
// health probe, when it starts listing the world: within a sliding window
// of HitRateWindow, at least HitRateMinClients distinct client addresses
// were looked up on the network and more than HitRatePercent percent of
// them were listed (any A record, error codes included: a list that
// answers everyone with an error code is broken too). A tripped list is
// suspended (its cached answers dropped, OnSuspend called, one error
// logged) and probed at once; the RFC 5782 probe then decides: a list that
// answers for 127.0.0.1 stays suspended until a later probe passes, a list
// that passes is restored and its window starts again, empty.
//
// Only network lookups count, each client once per window: a cache hit
// never counts, nor a second lookup of a client already in the window, nor
// a failed query.
//
// Why it is safe on a busy MX in a genuine spam wave, where a list such as
// zen lists 85–95% of the connecting clients (and more of the cache
// misses, since returning legitimate senders are mostly cache hits): the
// rule may trip then, but the probe is the judge, and a false trip costs
// only the time of one probe (one round trip to the resolver, bounded by
// the client timeout) during which the list is not applied: clients are
// counted as not listed, the safe direction; no good mail is refused. To
// keep a sustained wave from tripping the rule again and again (each trip
// drops the zone's cached answers, and fail2ban drops the list's refusals
// held across a suspension), every false trip rests the rule: for one
// window after the first, doubling with each false trip that follows
// within hitRateRestMax of the previous one, up to hitRateRestMax. A trip
// its probe confirms ends the rest. The scheduled probes and the probe
// before first use still run meanwhile.
const (
	HitRateWindow     = time.Minute
	HitRateMinClients = 50
	HitRatePercent    = 90
)

const (
	// hitRateMaxClients bounds a window's memory: past it the oldest
	// client leaves early, and the rate is that of the last
	// hitRateMaxClients distinct clients.
	hitRateMaxClients = 20_000
	// hitRateRestMax is the longest rest after false trips.
	hitRateRestMax = 16 * HitRateWindow
)

type rateEntry struct {
	at     time.Time
	ip     netip.Addr
	listed bool
}

// rateWindow is one zone's sliding window of distinct clients looked up.
// It is guarded by its zone's mutex.
type rateWindow struct {
	entries []rateEntry // oldest first, from head
	head    int
	seen    map[netip.Addr]struct{}
	listed  int // listed entries in the window

	restUntil     time.Time // the rule does not trip before
	falseTrips    int       // consecutive false trips
	lastFalseTrip time.Time
}

// clients returns the number of distinct clients in the window.
func (r *rateWindow) clients() int { return len(r.entries) - r.head }

// observe records a network lookup of ip at now and reports whether the
// rule trips.
func (r *rateWindow) observe(now time.Time, ip netip.Addr, listed bool) bool {
	r.expire(now)
	if _, ok := r.seen[ip]; ok {
		return false
	}
	if r.clients() >= hitRateMaxClients {
		r.pop()
	}
	if r.seen == nil {
		r.seen = make(map[netip.Addr]struct{})
	}
	r.seen[ip] = struct{}{}
	r.entries = append(r.entries, rateEntry{at: now, ip: ip, listed: listed})
	if listed {
		r.listed++
	}
	if now.Before(r.restUntil) {
		return false
	}
	n := r.clients()
	return n >= HitRateMinClients && r.listed*100 > n*HitRatePercent
}

// expire drops the clients looked up a window or longer before now.
func (r *rateWindow) expire(now time.Time) {
	cutoff := now.Add(-HitRateWindow)
	for r.clients() > 0 && !r.entries[r.head].at.After(cutoff) {
		r.pop()
	}
}

// pop drops the oldest client.
func (r *rateWindow) pop() {
	e := r.entries[r.head]
	r.entries[r.head] = rateEntry{}
	r.head++
	delete(r.seen, e.ip)
	if e.listed {
		r.listed--
	}
	if r.head > 1024 && r.head*2 > len(r.entries) {
		r.entries = append(r.entries[:0], r.entries[r.head:]...)
		r.head = 0
	}
}

// reset empties the window; the rest and the false-trip count stay.
func (r *rateWindow) reset() {
	r.entries, r.head, r.seen, r.listed = nil, 0, nil, 0
}

// falseTrip records that a trip's probe passed at now, empties the window
// and rests the rule; it returns the rest.
func (r *rateWindow) falseTrip(now time.Time) time.Duration {
	r.reset()
	if r.falseTrips == 0 || now.Sub(r.lastFalseTrip) > hitRateRestMax {
		r.falseTrips = 0
	}
	r.falseTrips++
	r.lastFalseTrip = now
	rest := HitRateWindow << min(r.falseTrips-1, 4)
	rest = min(rest, hitRateRestMax)
	r.restUntil = now.Add(rest)
	return rest
}

// confirmed records that a trip's probe found the list broken: the rule
// no longer rests once the list is restored.
func (r *rateWindow) confirmed() {
	r.reset()
	r.falseTrips, r.restUntil = 0, time.Time{}
}
