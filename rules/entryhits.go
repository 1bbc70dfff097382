package rules

import (
	"sync/atomic"
	"time"
)

// entryHits counts, per entry of a list, how often it matched and when it
// last did. A list embeds it and calls hit with the index of the entry
// that matched; the counters carry over to the same entries of the next
// configuration (Engine.SetConfig), so a reload keeps them.
type entryHits struct {
	stats []entryStat
}

// entryStat is one entry's count and its last match, in Unix nanoseconds.
type entryStat struct {
	hits atomic.Uint64
	last atomic.Int64
}

// grow makes room for n entries.
func (h *entryHits) grow(n int) { h.stats = make([]entryStat, n) }

// hit records a match of entry i. It does not allocate.
func (h *entryHits) hit(i int32) {
	if int(i) < len(h.stats) {
		h.stats[i].hits.Add(1)
		h.stats[i].last.Store(time.Now().UnixNano())
	}
}

// EntryHit is one list entry's use: how often it matched, and when last.
type EntryHit struct {
	// Key is the list's "section.key", e.g. "blacklist.hosts".
	Key string `json:"key"`
	// Entry is the entry as written.
	Entry string `json:"entry"`
	Hits  uint64 `json:"hits"`
	// LastHit is the time of the latest match; zero when it never matched.
	LastHit time.Time `json:"last_hit,omitzero"`
}

// hitList is a list whose entries count their hits.
type hitList interface {
	entries() []string
	counters() *entryHits
}

func (h *HostList) entries() []string {
	if h == nil {
		return nil
	}
	return h.values
}

func (h *HostList) counters() *entryHits {
	if h == nil {
		return nil
	}
	return &h.hits
}

func (a *AddressList) entries() []string {
	if a == nil {
		return nil
	}
	return a.values
}

func (a *AddressList) counters() *entryHits {
	if a == nil {
		return nil
	}
	return &a.hits
}

func (n *NamePatterns) entries() []string {
	if n == nil {
		return nil
	}
	return n.values
}

func (n *NamePatterns) counters() *entryHits {
	if n == nil {
		return nil
	}
	return &n.hits
}

// hitLists returns the configuration's lists that count entry hits, by
// key. server.allow and the command lists are not among them.
func (c *Config) hitLists() []struct {
	key  string
	list hitList
} {
	return []struct {
		key  string
		list hitList
	}{
		{"whitelist.hosts", c.Whitelist.Hosts},
		{"blacklist.hosts", c.Blacklist.Hosts},
		{"connections.allow", c.Connections.Allow},
		{"private_blacklist.hosts", c.PrivateBlacklist.Hosts},
		{"helo.deny", c.Helo.Deny},
		{"mail_from.deny", c.MailFrom.Deny},
		{"mail_from.allow", c.MailFrom.Allow},
		{"recipients.deny", c.Recipients.Deny},
		{"recipients.allow", c.Recipients.Allow},
	}
}

// carryHits copies the entry counters of old into c for every entry both
// have under the same key, so a reload does not reset them.
func (c *Config) carryHits(old *Config) {
	if old == nil || old == c {
		return
	}
	prev := map[string]hitList{}
	for _, l := range old.hitLists() {
		prev[l.key] = l.list
	}
	for _, l := range c.hitLists() {
		o, ok := prev[l.key]
		if !ok || o.counters() == nil || l.list.counters() == nil {
			continue
		}
		was := map[string]*entryStat{}
		oc := o.counters()
		for i, e := range o.entries() {
			if i < len(oc.stats) {
				was[e] = &oc.stats[i]
			}
		}
		nc := l.list.counters()
		for i, e := range l.list.entries() {
			if s, ok := was[e]; ok && i < len(nc.stats) {
				nc.stats[i].hits.Store(s.hits.Load())
				nc.stats[i].last.Store(s.last.Load())
			}
		}
	}
}

// EntryHits returns every entry of the configuration's lists with its
// hits and last hit, list by list in configuration order.
func (c *Config) EntryHits() []EntryHit {
	var out []EntryHit
	for _, l := range c.hitLists() {
		hc := l.list.counters()
		for i, e := range l.list.entries() {
			eh := EntryHit{Key: l.key, Entry: e}
			if hc != nil && i < len(hc.stats) {
				eh.Hits = hc.stats[i].hits.Load()
				if ns := hc.stats[i].last.Load(); ns != 0 {
					eh.LastHit = time.Unix(0, ns)
				}
			}
			out = append(out, eh)
		}
	}
	return out
}
