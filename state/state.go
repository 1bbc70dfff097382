package state

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Ban is a dynamic deny entry.
type Ban struct {
	// Prefix is what is banned; a single address is a /32 or /128. It is
	// stored masked (192.0.2.7/24 becomes 192.0.2.0/24).
	Prefix netip.Prefix `json:"prefix"`
	// Reason is a free text shown to the administrator.
	Reason string `json:"reason"`
	// Creator says who made the ban: "admin@relay-a", "autoban@relay-b".
	Creator string `json:"creator"`
	// Created is when the ban was made; AddBan fills it in when zero.
	Created time.Time `json:"created"`
	// Expires is when the ban stops matching; zero means never.
	Expires time.Time `json:"expires,omitzero"`
	// Refusals are, for an automatic ban, the refusals that caused it.
	Refusals []string `json:"refusals,omitempty"`
}

// expired reports whether b no longer applies at now.
func (b *Ban) expired(now time.Time) bool {
	return !b.Expires.IsZero() && !now.Before(b.Expires)
}

// equal reports whether a and b hold the same ban.
func (b *Ban) equal(o *Ban) bool {
	return b.Prefix == o.Prefix && b.Reason == o.Reason && b.Creator == o.Creator &&
		b.Created.Equal(o.Created) && b.Expires.Equal(o.Expires) &&
		slices.Equal(b.Refusals, o.Refusals)
}

// Decision is the answer of a rate limit.
type Decision struct {
	// Allowed says whether the request fits the limit; when it does, its
	// cost has been taken.
	Allowed bool
	// Remaining is how many more units the limit allows right now.
	Remaining int
	// RetryAfter is, for a denied request, how long until the same request
	// would be allowed; zero when allowed.
	RetryAfter time.Duration
}

// Grey is the answer of Greylist.
type Grey struct {
	// Pass says whether the attempt may pass.
	Pass bool
	// New says this was the first attempt (or the first after the window).
	// Memory answers Pass and New together when it holds as many triplets
	// as it may and so lets a new triplet through without remembering it.
	New bool
	// Wait is how long until a retry may pass (0 when Pass).
	Wait time.Duration
	// Delayed is how long the triplet waited before it first passed (for
	// the "X-Greylist: delayed N seconds" header); set when Pass.
	Delayed time.Duration
	// FirstPass says this attempt is the one that passed first (the
	// caller then counts GreylistPassed for the network).
	FirstPass bool
}

// Backend holds the dynamic state that the relays of a fleet share: bans,
// refusal counts for automatic bans, rate limits, greylisting and
// statistics. Memory is
// the backend of a single relay, Redis the one of a fleet. All methods are
// safe for concurrent use.
type Backend interface {
	// AddBan stores b, replacing any ban on the same prefix. It fails for
	// an invalid prefix and for a ban that has already expired.
	AddBan(ctx context.Context, b Ban) error
	// RemoveBan deletes the ban on exactly p and reports whether there was
	// one.
	RemoveBan(ctx context.Context, p netip.Prefix) (bool, error)
	// Bans returns the bans in force, from the local replica, sorted by
	// prefix (IPv4 before IPv6, then by address, then shorter first).
	Bans() []Ban
	// Banned returns the ban that matches ip, the longest prefix winning.
	// It reads only the local replica: it never touches the network, takes
	// no lock and does not allocate. Expired bans do not match. The
	// returned Ban shares its Refusals with the replica: do not modify it.
	Banned(ip netip.Addr) (Ban, bool)
	// CountRefusal records one refusal for key with its detail and returns
	// how many refusals for key were recorded fleet-wide within the sliding
	// window within (this one included), and the details of the most
	// recent ones (at most 10, oldest first, this one last). Counts
	// saturate at 1000 per key.
	CountRefusal(ctx context.Context, key string, within time.Duration, detail string) (count int, recent []string, err error)
	// ResetRefusals forgets the refusals recorded for key.
	ResetRefusals(ctx context.Context, key string) error
	// Allow takes cost units from the GCRA rate limit of key, which allows
	// limit units per period per with a burst of limit. A cost above limit
	// is never allowed; a cost of 0 only reports Remaining.
	Allow(ctx context.Context, key string, limit int, per time.Duration, cost int) (Decision, error)
	// Greylist records an attempt of the triplet key (client network,
	// sender, recipient) and says whether it may pass: the first attempt
	// is remembered and must wait delay; a retry after delay and within
	// retry (counted from the first attempt) passes, and the triplet is
	// then remembered as passed for keep (every later attempt passes at
	// once and renews keep); a retry after the window is a first attempt
	// again. It fails for an empty key, a delay that is not positive, a
	// retry window not longer than delay and a keep that is not positive.
	Greylist(ctx context.Context, key string, delay, retry, keep time.Duration) (Grey, error)
	// GreylistPassed counts, for a client network, the triplets that
	// passed (each counted once, when it passes: add is how many passed
	// now) within the sliding window keep, and returns the count (the
	// caller compares it to auto_whitelist_after). add 0 only reads.
	// Counts saturate at 100 per network.
	GreylistPassed(ctx context.Context, network string, add int, keep time.Duration) (int, error)
	// GreylistTriplets returns how many triplets are remembered, for a
	// gauge. Memory counts the triplets that expired since its last sweep
	// too; Redis counts what its index holds once trimmed of what has
	// expired.
	GreylistTriplets(ctx context.Context) (int, error)
	// PublishStats stores doc as the statistics of relay for ttl.
	PublishStats(ctx context.Context, relay string, doc []byte, ttl time.Duration) error
	// FleetStats returns, for every relay, the last document it published
	// that has not expired yet.
	FleetStats(ctx context.Context) (map[string][]byte, error)
	// Up reports whether the backend is reachable; Memory always is.
	Up() bool
	// Name is "memory" or "redis".
	Name() string
	// Close stops the backend's goroutines and releases its resources.
	Close() error
}

// ErrUnavailable is wrapped by every error that a backend returns because
// its store cannot be reached or answered too late. Callers test for it
// with errors.Is and fail open.
var ErrUnavailable = errors.New("state backend unavailable")

const (
	// maxRecent is how many refusal details CountRefusal returns.
	maxRecent = 10
	// maxRefusals is how many refusals are kept per key: counts saturate
	// there, which bounds memory under a flood.
	maxRefusals = 1000
	// maxGreyPassed is where the counts of GreylistPassed saturate: far
	// above any auto_whitelist_after, it bounds a network's window.
	maxGreyPassed = 100
)

// normPrefix validates p and returns it masked, IPv4-mapped IPv6 prefixes
// turned into IPv4 ones.
func normPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("state: invalid prefix %q", p)
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("state: prefix %s mixes IPv4-mapped and IPv6 space", p)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// prepareBan validates b for AddBan and fills in Created.
func prepareBan(b Ban, now time.Time) (Ban, error) {
	p, err := normPrefix(b.Prefix)
	if err != nil {
		return Ban{}, err
	}
	b.Prefix = p
	if b.Created.IsZero() {
		b.Created = now
	}
	if b.expired(now) {
		return Ban{}, fmt.Errorf("state: ban on %s expired at %s", p, b.Expires.Format(time.RFC3339))
	}
	b.Refusals = slices.Clone(b.Refusals)
	return b, nil
}

// checkLimit validates the arguments of Allow.
func checkLimit(limit int, per time.Duration, cost int) error {
	switch {
	case limit <= 0:
		return fmt.Errorf("state: rate limit %d is not positive", limit)
	case per <= 0:
		return fmt.Errorf("state: rate period %s is not positive", per)
	case cost < 0:
		return fmt.Errorf("state: rate cost %d is negative", cost)
	}
	return nil
}

// checkWindow validates the arguments of CountRefusal.
func checkWindow(key string, within time.Duration) error {
	if key == "" {
		return errors.New("state: empty refusal key")
	}
	if within <= 0 {
		return fmt.Errorf("state: refusal window %s is not positive", within)
	}
	return nil
}

// checkGrey validates the arguments of Greylist.
func checkGrey(key string, delay, retry, keep time.Duration) error {
	switch {
	case key == "":
		return errors.New("state: empty greylist key")
	case delay <= 0:
		return fmt.Errorf("state: greylist delay %s is not positive", delay)
	case retry <= delay:
		return fmt.Errorf("state: greylist retry window %s is not longer than the delay %s", retry, delay)
	case keep <= 0:
		return fmt.Errorf("state: greylist keep %s is not positive", keep)
	}
	return nil
}

// checkGreyPassed validates the arguments of GreylistPassed.
func checkGreyPassed(network string, add int, keep time.Duration) error {
	switch {
	case network == "":
		return errors.New("state: empty greylist network")
	case add < 0:
		return fmt.Errorf("state: greylist passed count %d is negative", add)
	case keep <= 0:
		return fmt.Errorf("state: greylist keep %s is not positive", keep)
	}
	return nil
}

// comparePrefix orders prefixes for Bans: IPv4 first, then by address,
// then the shorter prefix first.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
