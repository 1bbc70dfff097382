package webauth

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// The defaults of LimiterOptions.
const (
	// DefaultIPFailures is how many failed logins a client address may
	// make in a window.
	DefaultIPFailures = 5
	// DefaultUserFailures is how many failed logins a user name may
	// have in a window, from every address together.
	DefaultUserFailures = 10
	// DefaultWindow is the sliding window the failures are counted in.
	DefaultWindow = 15 * time.Minute
	// DefaultMaxKeys bounds the addresses, and apart from them the user
	// names, whose failures are kept.
	DefaultMaxKeys = 10000
)

// ipv6Bits is the network an IPv6 client is counted by: one host holds
// a /64 as easily as one address.
const ipv6Bits = 64

// LimiterOptions configure a Limiter.
type LimiterOptions struct {
	// Now is the clock of the window; nil means time.Now.
	Now func() time.Time
	// IPFailures is how many failed logins an address may make in any
	// Window; DefaultIPFailures when 0.
	IPFailures int
	// UserFailures is how many failed logins a user name may have in any
	// Window, from every address together; DefaultUserFailures when 0.
	UserFailures int
	// Window is how long a failure counts; DefaultWindow when 0.
	Window time.Duration
	// MaxKeys bounds the addresses, and apart from them the user names,
	// kept; beyond it the one that failed least recently is forgotten.
	// DefaultMaxKeys when 0.
	MaxKeys int
}

// Limiter limits failed logins by client address (an IPv6 client by its
// /64) and by user name, in a sliding window. Its methods are safe for
// concurrent use.
type Limiter struct {
	now    func() time.Time
	window time.Duration

	mu    sync.Mutex
	ips   *failures[netip.Prefix]
	users *failures[string]
}

// NewLimiter returns a limiter that has seen no failure.
func NewLimiter(o LimiterOptions) *Limiter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.IPFailures <= 0 {
		o.IPFailures = DefaultIPFailures
	}
	if o.UserFailures <= 0 {
		o.UserFailures = DefaultUserFailures
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	return &Limiter{
		now: o.Now, window: o.Window,
		ips:   newFailures[netip.Prefix](o.IPFailures, o.MaxKeys),
		users: newFailures[string](o.UserFailures, o.MaxKeys),
	}
}

// Allow reports whether a login as user from ip may be tried: neither
// has used up its failures in the window. When not, retryAfter is how
// long until one may be tried again.
func (l *Limiter) Allow(ip netip.Addr, user string) (ok bool, retryAfter time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	retryAfter = max(l.ips.blocked(ipKey(ip), now, l.window), l.users.blocked(userKey(user), now, l.window))
	return retryAfter == 0, retryAfter
}

// Failure counts a failed login as user from ip.
func (l *Limiter) Failure(ip netip.Addr, user string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ips.add(ipKey(ip), now, l.window)
	l.users.add(userKey(user), now, l.window)
}

// Success forgets the failures of ip, which logged in as user. The user
// name's failures stay: they may be another's guesses.
func (l *Limiter) Success(ip netip.Addr, user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ips.forget(ipKey(ip))
}

// ipKey is what ip's failures are counted under: the address, or an
// IPv6 address's /64.
func ipKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	bits := ip.BitLen()
	if ip.Is6() {
		bits = ipv6Bits
	}
	p, _ := ip.Prefix(bits) // the zero Prefix for the zero Addr
	return p
}

// longName is the key of every name longer than MaxName, which no user
// has: what a client sends does not grow the keys beyond MaxName bytes.
const longName = "\x00long"

func userKey(user string) string {
	if len(user) > MaxName {
		return longName
	}
	return user
}

// failures are the recent failures of keys of one kind, least recently
// failed first.
type failures[K comparable] struct {
	limit, maxKeys int
	byKey          map[K]*list.Element // of *record[K]
	order          *list.List
}

// record is a key's failures in the window, oldest first, at most limit.
type record[K comparable] struct {
	key   K
	times []time.Time
}

func newFailures[K comparable](limit, maxKeys int) *failures[K] {
	return &failures[K]{limit: limit, maxKeys: maxKeys, byKey: make(map[K]*list.Element), order: list.New()}
}

// blocked returns how long until k may fail again, 0 when it may now.
func (f *failures[K]) blocked(k K, now time.Time, window time.Duration) time.Duration {
	el, ok := f.byKey[k]
	if !ok {
		return 0
	}
	r := el.Value.(*record[K])
	r.prune(now, window)
	if len(r.times) == 0 {
		f.remove(el)
		return 0
	}
	if len(r.times) < f.limit {
		return 0
	}
	return r.times[0].Add(window).Sub(now)
}

// add counts a failure of k at now.
func (f *failures[K]) add(k K, now time.Time, window time.Duration) {
	// The least recently failed first: those whose failures all left the
	// window are forgotten.
	for el := f.order.Front(); el != nil; el = f.order.Front() {
		r := el.Value.(*record[K])
		if len(r.times) > 0 && now.Sub(r.times[len(r.times)-1]) < window {
			break
		}
		f.remove(el)
	}
	el, ok := f.byKey[k]
	if !ok {
		for len(f.byKey) >= f.maxKeys {
			f.remove(f.order.Front())
		}
		el = f.order.PushBack(&record[K]{key: k})
		f.byKey[k] = el
	} else {
		f.order.MoveToBack(el)
	}
	r := el.Value.(*record[K])
	r.prune(now, window)
	r.times = append(r.times, now)
	if len(r.times) > f.limit {
		r.times = append(r.times[:0], r.times[len(r.times)-f.limit:]...)
	}
}

func (f *failures[K]) forget(k K) {
	if el, ok := f.byKey[k]; ok {
		f.remove(el)
	}
}

func (f *failures[K]) remove(el *list.Element) {
	delete(f.byKey, el.Value.(*record[K]).key)
	f.order.Remove(el)
}

// prune drops the failures that left the window.
func (r *record[K]) prune(now time.Time, window time.Duration) {
	i := 0
	for i < len(r.times) && now.Sub(r.times[i]) >= window {
		i++
	}
	if i > 0 {
		r.times = append(r.times[:0], r.times[i:]...)
	}
}
