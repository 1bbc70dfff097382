package policy

import (
	"container/list"
	"hash/maphash"
	"sync"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// instance is the state of one message, tied together by Postfix's
// instance attribute: the engine session (client, HELO, sender, recipients
// accepted so far), refusals that hold for the rest of the message, and
// the tag headers still to be prepended.
type instance struct {
	mu       sync.Mutex // one message's requests are sequential; this guards odd clients
	key      string
	client   string // client_address the session was made for
	port     string // client_port (the SMTP session, with client)
	dataSeen bool   // a DATA request was answered: the message is complete
	sess     *rules.Session
	heloDone bool
	mailDone bool
	// sticky is a MAIL FROM refusal repeated for every later request of
	// the message (Postfix's smtpd_delay_reject asks the policy at RCPT,
	// where a sender refusal refuses each recipient).
	sticky *rules.Verdict
	// tagsQueued is set once the message's tag headers were taken from
	// the engine; pending holds those not yet prepended.
	tagsQueued bool
	pending    []rules.Header

	lastUsed time.Time
	elem     *list.Element
}

// reset forgets everything but the key, for an instance reused by another
// client (no Postfix does that; a confused or hostile client might).
// The caller holds in.mu.
func (in *instance) reset() {
	in.client, in.port, in.sess, in.dataSeen = "", "", nil, false
	in.heloDone, in.mailDone, in.sticky = false, false, nil
	in.tagsQueued, in.pending = false, nil
}

// instanceTable holds instances, bounded in number and age so that a flood
// of connections or instances cannot grow memory without end. It is
// sharded to keep lock contention low with many connections.
type instanceTable struct {
	seed     maphash.Seed
	shards   [16]instanceShard
	perShard int
	ttl      time.Duration
	now      func() time.Time
}

type instanceShard struct {
	mu  sync.Mutex
	m   map[string]*instance
	lru list.List // front: most recently used
}

func newInstanceTable(max int, ttl time.Duration, now func() time.Time) *instanceTable {
	t := &instanceTable{seed: maphash.MakeSeed(), ttl: ttl, now: now}
	t.perShard = max / len(t.shards)
	if t.perShard < 1 {
		t.perShard = 1
	}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*instance)
	}
	return t
}

// get returns the instance for key, creating it when new. Expired and
// excess instances are dropped, oldest first, and returned so the caller
// can end their messages.
func (t *instanceTable) get(key string) (in *instance, evicted []*instance) {
	sh := &t.shards[maphash.String(t.seed, key)%uint64(len(t.shards))]
	now := t.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if in, ok := sh.m[key]; ok {
		if now.Sub(in.lastUsed) < t.ttl {
			in.lastUsed = now
			sh.lru.MoveToFront(in.elem)
			return in, nil
		}
		sh.lru.Remove(in.elem) // expired: the message is long gone
		delete(sh.m, key)
		evicted = append(evicted, in)
	}
	for sh.lru.Len() > 0 {
		oldest := sh.lru.Back().Value.(*instance)
		if sh.lru.Len() < t.perShard && now.Sub(oldest.lastUsed) < t.ttl {
			break
		}
		sh.lru.Remove(oldest.elem)
		delete(sh.m, oldest.key)
		evicted = append(evicted, oldest)
	}
	in = &instance{key: key, lastUsed: now}
	in.elem = sh.lru.PushFront(in)
	sh.m[key] = in
	return in, evicted
}

// remove drops an instance whose message is over, if it is still the one
// held under its key.
func (t *instanceTable) remove(in *instance) {
	sh := &t.shards[maphash.String(t.seed, in.key)%uint64(len(t.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur, ok := sh.m[in.key]; ok && cur == in {
		sh.lru.Remove(in.elem)
		delete(sh.m, in.key)
	}
}

// drain empties the table and returns what it held.
func (t *instanceTable) drain() []*instance {
	var out []*instance
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for _, in := range sh.m {
			out = append(out, in)
		}
		sh.m = make(map[string]*instance)
		sh.lru.Init()
		sh.mu.Unlock()
	}
	return out
}

// len returns the number of instances held.
func (t *instanceTable) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
