package dnsclient

import (
	"sync"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// call is one lookup in flight; every caller asking for the same key while
// it runs waits for its result.
type call struct {
	done    chan struct{} // closed when ans (or host) and err are set
	ans     rules.DNSAnswer
	host    hostAnswer // the answer of a HostDNS lookup
	err     error
	waiters int // callers waiting; guarded by flight.mu
}

// flight tracks the lookups in flight, so that concurrent lookups of one
// (zone, address), or of one HostDNS question, send one query (a minimal
// singleflight).
type flight struct {
	mu    sync.Mutex
	calls map[cacheKey]*call
}

// finish publishes a call's result to its waiters and forgets it.
func (f *flight) finish(k cacheKey, cl *call, ans rules.DNSAnswer, err error) {
	cl.ans, cl.err = ans, err
	f.mu.Lock()
	delete(f.calls, k)
	f.mu.Unlock()
	close(cl.done)
}

// finishHost publishes a HostDNS lookup's result to its waiters and
// forgets it.
func (f *flight) finishHost(k cacheKey, cl *call, h hostAnswer, err error) {
	cl.host, cl.err = h, err
	f.mu.Lock()
	delete(f.calls, k)
	f.mu.Unlock()
	close(cl.done)
}

// waiting returns how many callers wait for the lookup of k; 0 when none
// is in flight. Tests use it to know every caller has joined.
func (f *flight) waiting(k cacheKey) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cl, ok := f.calls[k]; ok {
		return cl.waiters
	}
	return 0
}
