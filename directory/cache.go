package directory

import (
	"sync"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// cache is a least-recently-used map of lower-case addresses to answers,
// each with its expiry. Looking an answer up allocates nothing.
type cache struct {
	mu   sync.Mutex
	max  int
	m    map[string]*cacheEntry
	head *cacheEntry // most recently used; head.prev is the least
}

type cacheEntry struct {
	key        string
	ans        rules.DirectoryAnswer
	expires    time.Time
	prev, next *cacheEntry
}

func newCache(max int) *cache {
	return &cache{max: max, m: make(map[string]*cacheEntry, min(max, 1024))}
}

// get returns the answer cached for key unless it expired by now.
func (c *cache) get(key string, now time.Time) (rules.DirectoryAnswer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hit(c.m[key], now)
}

// getBytes is get with the key in a byte slice: the map lookup with
// string(key) does not allocate.
func (c *cache) getBytes(key []byte, now time.Time) (rules.DirectoryAnswer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hit(c.m[string(key)], now)
}

func (c *cache) hit(e *cacheEntry, now time.Time) (rules.DirectoryAnswer, bool) {
	if e == nil {
		return rules.DirectoryAnswer{}, false
	}
	if !now.Before(e.expires) {
		c.remove(e)
		return rules.DirectoryAnswer{}, false
	}
	c.front(e)
	return e.ans, true
}

// put caches ans for key until expires, evicting the least recently used
// entry when the cache is full.
func (c *cache) put(key string, ans rules.DirectoryAnswer, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[key]; e != nil {
		e.ans, e.expires = ans, expires
		c.front(e)
		return
	}
	if len(c.m) >= c.max {
		c.remove(c.head.prev)
	}
	e := &cacheEntry{key: key, ans: ans, expires: expires}
	c.m[key] = e
	c.front(e)
}

// len returns the number of answers held, expired ones included until
// they are looked up or evicted.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// front moves e, linked or not, to the head of the list.
func (c *cache) front(e *cacheEntry) {
	if c.head == e {
		return
	}
	if e.next != nil {
		e.prev.next, e.next.prev = e.next, e.prev
	}
	if c.head == nil {
		e.prev, e.next = e, e
	} else {
		e.next, e.prev = c.head, c.head.prev
		c.head.prev.next = e
		c.head.prev = e
	}
	c.head = e
}

func (c *cache) remove(e *cacheEntry) {
	delete(c.m, e.key)
	if e.next == e {
		c.head = nil
	} else {
		e.prev.next, e.next.prev = e.next, e.prev
		if c.head == e {
			c.head = e.next
		}
	}
	e.prev, e.next = nil, nil
}
