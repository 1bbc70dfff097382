package state

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
)

// entry is what the replica's table holds for a prefix: the ban, never
// modified once stored, and its expiry in Unix nanoseconds (0: never) so
// that the hot path compares integers.
type entry struct {
	ban *Ban
	exp int64
}

// replica is the local copy of the bans that Banned reads. Readers load an
// immutable table through an atomic pointer; writers, serialised by mu,
// derive a new table with bart's persistent (copy-on-write) operations and
// swap it in.
type replica struct {
	now func() time.Time

	mu    sync.Mutex
	table atomic.Pointer[bart.Table[entry]]
}

func newReplica(now func() time.Time) *replica {
	r := &replica{now: now}
	r.table.Store(new(bart.Table[entry]))
	return r
}

func newEntry(b Ban) entry {
	e := entry{ban: &b}
	if !b.Expires.IsZero() {
		e.exp = b.Expires.UnixNano()
	}
	return e
}

// banned is Banned: a longest-prefix match on the current table. When the
// longest match has expired (the sweep has not removed it yet) it falls
// back to the covering prefixes, longest first; that rare path may
// allocate, the common one does not.
func (r *replica) banned(ip netip.Addr) (Ban, bool) {
	ip = ip.Unmap()
	t := r.table.Load()
	e, ok := t.Lookup(ip)
	if !ok {
		return Ban{}, false
	}
	now := r.now().UnixNano()
	if e.exp == 0 || now < e.exp {
		return *e.ban, true
	}
	for _, e := range t.Supernets(netip.PrefixFrom(ip, ip.BitLen())) {
		if e.exp == 0 || now < e.exp {
			return *e.ban, true
		}
	}
	return Ban{}, false
}

// list returns the unexpired bans sorted by comparePrefix.
func (r *replica) list() []Ban {
	t := r.table.Load()
	now := r.now()
	out := make([]Ban, 0, t.Size())
	for _, e := range t.All() {
		if !e.ban.expired(now) {
			b := *e.ban
			b.Refusals = slices.Clone(b.Refusals)
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b Ban) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// get returns the ban stored on exactly p, expired or not.
func (r *replica) get(p netip.Prefix) (Ban, bool) {
	e, ok := r.table.Load().Get(p)
	if !ok {
		return Ban{}, false
	}
	return *e.ban, true
}

// put stores b (already validated), replacing a ban on the same prefix.
func (r *replica) put(b Ban) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.table.Store(r.table.Load().InsertPersist(b.Prefix, newEntry(b)))
}

// del removes the ban on exactly p and reports whether there was one.
func (r *replica) del(p netip.Prefix) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.table.Load()
	if _, ok := t.Get(p); !ok {
		return false
	}
	r.table.Store(t.DeletePersist(p))
	return true
}

// replace makes bans the whole content of the replica, unless it holds
// exactly that already, and reports whether anything changed.
func (r *replica) replace(bans []Ban) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.table.Load()
	if cur.Size() == len(bans) {
		same := true
		for i := range bans {
			e, ok := cur.Get(bans[i].Prefix)
			if !ok || !e.ban.equal(&bans[i]) {
				same = false
				break
			}
		}
		if same {
			return false
		}
	}
	t := new(bart.Table[entry])
	for _, b := range bans {
		t.Insert(b.Prefix, newEntry(b))
	}
	r.table.Store(t)
	return true
}

// dropExpired removes the bans expired at now and returns their prefixes.
func (r *replica) dropExpired(now time.Time) []netip.Prefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.table.Load()
	var gone []netip.Prefix
	for p, e := range t.All() {
		if e.ban.expired(now) {
			gone = append(gone, p)
		}
	}
	for _, p := range gone {
		t = t.DeletePersist(p)
	}
	r.table.Store(t)
	return gone
}

// size is the number of bans stored, expired ones included.
func (r *replica) size() int { return r.table.Load().Size() }
