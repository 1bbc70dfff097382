package rules

import (
	"sync"
	"sync/atomic"
)

// stateCounters count what the state backend adds: rate-limit refusals
// by rule, limiter failures, automatic bans, and the backend's
// reachability.
type stateCounters struct {
	limited  sync.Map // rule name -> *atomic.Uint64
	errors   atomic.Uint64
	autobans atomic.Uint64
	// greylist: first attempts tempfailed, triplets that passed.
	greyDelayed, greyPassed, greyErrors atomic.Uint64
	// down is set while the backend is unreachable.
	down atomic.Bool
}

func (c *Counters) rateLimited(rule string) {
	v, ok := c.state.limited.Load(rule)
	if !ok {
		v, _ = c.state.limited.LoadOrStore(rule, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

func (c *Counters) rateLimitError() { c.state.errors.Add(1) }

func (c *Counters) greylistDelayed() { c.state.greyDelayed.Add(1) }

func (c *Counters) greylistPassed() { c.state.greyPassed.Add(1) }

func (c *Counters) greylistError() { c.state.greyErrors.Add(1) }

// Autobanned counts an automatic ban.
func (c *Counters) Autobanned() { c.state.autobans.Add(1) }

// SetStateUp records whether the state backend is reachable (its OnUp).
func (c *Counters) SetStateUp(up bool) { c.state.down.Store(!up) }

// StateSnapshot is the state backend's counters.
type StateSnapshot struct {
	// Up says the backend is reachable.
	Up bool `json:"up"`
	// RateLimited counts refusals by rate-limit rule.
	RateLimited map[string]uint64 `json:"ratelimited"`
	// RateLimitErrors counts requests let through because the limiter
	// could not be asked.
	RateLimitErrors uint64 `json:"ratelimit_errors"`
	// Autobans counts automatic bans made by this relay.
	Autobans uint64 `json:"autobans"`
	// GreylistDelayed counts recipients tempfailed by greylisting,
	// GreylistPassed triplets that passed after waiting.
	GreylistDelayed uint64 `json:"greylist_delayed"`
	GreylistPassed  uint64 `json:"greylist_passed"`
	// GreylistErrors counts recipients let through because the triplet
	// store could not be asked (greylisting fails open).
	GreylistErrors uint64 `json:"greylist_errors"`
}

func (c *Counters) stateSnapshot() StateSnapshot {
	s := StateSnapshot{Up: !c.state.down.Load(), RateLimited: map[string]uint64{},
		RateLimitErrors: c.state.errors.Load(), Autobans: c.state.autobans.Load(),
		GreylistDelayed: c.state.greyDelayed.Load(), GreylistPassed: c.state.greyPassed.Load(),
		GreylistErrors: c.state.greyErrors.Load()}
	c.state.limited.Range(func(k, v any) bool {
		s.RateLimited[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return s
}
