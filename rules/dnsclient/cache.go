package dnsclient

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// cacheKey identifies one lookup: a normalized zone and client address.
// It is comparable, so a cache hit builds no string.
type cacheKey struct {
	zone string
	ip   netip.Addr
}

type cacheEntry struct {
	key     cacheKey
	ans     rules.DNSAnswer
	expires time.Time
}

// cache is a bounded least-recently-used cache of answers. Its lock is held
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
	el, ok := c.m[k]
	if !ok {
		return rules.DNSAnswer{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.m, k)
		return rules.DNSAnswer{}, false
	}
	c.ll.MoveToFront(el)
	return e.ans, true
}

// add caches ans for k until expires, evicting the least recently used
// entries beyond the bound.
func (c *cache) add(k cacheKey, ans rules.DNSAnswer, expires time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		e := el.Value.(*cacheEntry)
		e.ans, e.expires = ans, expires
		c.ll.MoveToFront(el)
		return
	}
	c.m[k] = c.ll.PushFront(&cacheEntry{key: k, ans: ans, expires: expires})
	for c.ll.Len() > c.max {
		oldest := c.ll.Back()
		c.ll.Remove(oldest)
		delete(c.m, oldest.Value.(*cacheEntry).key)
	}
}

// purgeZone drops every answer of zone and returns how many there were.
// It walks the whole cache: it runs only when a list is suspended.
func (c *cache) purgeZone(zone string) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*cacheEntry); e.key.zone == zone {
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
