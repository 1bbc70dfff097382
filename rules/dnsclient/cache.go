package dnsclient

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// cacheKey identifies one lookup: a normalized zone and client address
// for a DNS list (kind kindList, the zero value), or a HostDNS question
// (kindPTR, kindDomain). It is comparable, so a cache hit builds no
// string.
type cacheKey struct {
	zone string
	ip   netip.Addr
	kind keyKind
}

// keyKind tells the questions one cache and one flight map hold apart.
type keyKind uint8

const (
	// kindList: a DNS list's answer for (zone, ip).
	kindList keyKind = iota
	// kindPTR: the PTR names of ip; zone is "".
	kindPTR
	// kindDomain: whether the domain in zone has an MX, A or AAAA record;
	// ip is the zero Addr.
	kindDomain
)

type cacheEntry struct {
	key     cacheKey
	ans     rules.DNSAnswer // kindList
	host    hostAnswer      // kindPTR, kindDomain
	expires time.Time
}

// hostAnswer is the answer of a HostDNS question.
type hostAnswer struct {
	names  []string // kindPTR: the PTR names, normalized; nil when none
	exists bool     // kindDomain: the domain has an MX, A or AAAA record
}

// cache is a bounded least-recently-used cache of answers: DNS list
// answers and HostDNS answers share it, and its bound. Its lock is held
// only for map and list operations, never across I/O. A nil *cache caches
// nothing.
type cache struct {
	max int
	mu  sync.Mutex
	ll  *list.List // of *cacheEntry, most recently used first
	m   map[cacheKey]*list.Element
}

// newCache returns a cache of at most max entries; nil when max <= 0.
func newCache(max int) *cache {
	if max <= 0 {
		return nil
	}
	return &cache{max: max, ll: list.New(), m: make(map[cacheKey]*list.Element)}
}

// get returns the answer cached for k, if it has not expired at now.
func (c *cache) get(k cacheKey, now time.Time) (rules.DNSAnswer, bool) {
	if c == nil {
		return rules.DNSAnswer{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.live(k, now)
	if e == nil {
		return rules.DNSAnswer{}, false
	}
	return e.ans, true
}

// getHost returns the HostDNS answer cached for k, if it has not expired
// at now.
func (c *cache) getHost(k cacheKey, now time.Time) (hostAnswer, bool) {
	if c == nil {
		return hostAnswer{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.live(k, now)
	if e == nil {
		return hostAnswer{}, false
	}
	return e.host, true
}

// live returns the entry of k, made the most recently used; nil when there
// is none or it has expired at now (it is then dropped). c.mu must be
// held.
func (c *cache) live(k cacheKey, now time.Time) *cacheEntry {
	el, ok := c.m[k]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.m, k)
		return nil
	}
	c.ll.MoveToFront(el)
	return e
}

// add caches ans for k until expires, evicting the least recently used
// entries beyond the bound.
func (c *cache) add(k cacheKey, ans rules.DNSAnswer, expires time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.put(k, expires).ans = ans
}

// addHost caches the HostDNS answer h for k until expires, evicting the
// least recently used entries beyond the bound.
func (c *cache) addHost(k cacheKey, h hostAnswer, expires time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.put(k, expires).host = h
}

// put returns the entry of k, created if need be, set to expire at
// expires and made the most recently used, and evicts the least recently
// used entries beyond the bound (never the one returned: max >= 1). The
// caller sets its answer. c.mu must be held.
func (c *cache) put(k cacheKey, expires time.Time) *cacheEntry {
	if el, ok := c.m[k]; ok {
		e := el.Value.(*cacheEntry)
		e.expires = expires
		c.ll.MoveToFront(el)
		return e
	}
	e := &cacheEntry{key: k, expires: expires}
	c.m[k] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		oldest := c.ll.Back()
		c.ll.Remove(oldest)
		delete(c.m, oldest.Value.(*cacheEntry).key)
	}
	return e
}

// purgeZone drops every answer of the DNS list zone and returns how many
// there were; HostDNS answers stay, even for a domain named like the
// zone. It walks the whole cache: it runs only when a list is suspended.
func (c *cache) purgeZone(zone string) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*cacheEntry); e.key.kind == kindList && e.key.zone == zone {
			c.ll.Remove(el)
			delete(c.m, e.key)
			n++
		}
		el = next
	}
	return n
}

// len returns the number of entries, expired ones included.
func (c *cache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// remove drops the answer cached for k, if any.
func (c *cache) remove(k cacheKey) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		c.ll.Remove(el)
		delete(c.m, k)
	}
}
