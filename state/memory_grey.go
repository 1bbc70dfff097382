package state

import (
	"context"
	"time"
)

const (
	// maxGreyTriplets bounds the triplets Memory remembers. Past it a new
	// triplet is not remembered: Greylist lets it pass at once (Pass and
	// New, not FirstPass), so that mail is never blocked by a full table,
	// until the sweep has made room. Triplets already remembered keep
	// their state.
	maxGreyTriplets = 1_000_000
	// maxGreyNetworks bounds the networks whose passes Memory counts. Past
	// it, GreylistPassed for a new network returns what it was asked to
	// add (at most maxGreyPassed) without remembering it, so that network
	// is not whitelisted automatically until the sweep has made room.
	maxGreyNetworks = 100_000
	// sweepChunk is how many entries the sweep looks at per hold of the
	// greylist lock, so that a sweep of a million triplets never holds up
	// Greylist for long.
	sweepChunk = 4096
)

// greyEntry is one remembered triplet, in Unix nanoseconds of the
// backend's clock; no pointer, so that a million of them cost the garbage
// collector nothing.
type greyEntry struct {
	first   int64 // the first attempt
	expires int64 // first + retry while waiting, last use + keep once passed
	delayed int64 // how long it waited before it passed (ns), once passed
	passed  bool
}

// greyPassLog is the sliding window of the passes of one network.
type greyPassLog struct {
	at   []int64 // Unix ns, oldest first
	keep int64   // ns
}

// Greylist implements Backend on the clock Now. It never scans: expired
// triplets are treated as absent when met and removed by the sweep.
func (m *Memory) Greylist(ctx context.Context, key string, delay, retry, keep time.Duration) (Grey, error) {
	if err := ctx.Err(); err != nil {
		return Grey{}, err
	}
	if err := checkGrey(key, delay, retry, keep); err != nil {
		return Grey{}, err
	}
	now := m.o.Now().UnixNano()
	m.greyMu.Lock()
	defer m.greyMu.Unlock()
	e, known := m.grey[key]
	live := known && now < e.expires
	switch {
	case live && e.passed:
		e.expires = now + int64(keep)
		m.grey[key] = e
		return Grey{Pass: true, Delayed: time.Duration(e.delayed)}, nil
	case live:
		age := time.Duration(now - e.first)
		if age < delay {
			return Grey{Wait: delay - age}, nil
		}
		if age < retry {
			m.grey[key] = greyEntry{first: e.first, expires: now + int64(keep), delayed: int64(age), passed: true}
			return Grey{Pass: true, Delayed: age, FirstPass: true}, nil
		}
	}
	if !known && len(m.grey) >= m.greyMax {
		return Grey{Pass: true, New: true}, nil
	}
	m.grey[key] = greyEntry{first: now, expires: now + int64(retry)}
	return Grey{New: true, Wait: delay}, nil
}

// GreylistPassed implements Backend on the clock Now.
func (m *Memory) GreylistPassed(ctx context.Context, network string, add int, keep time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkGreyPassed(network, add, keep); err != nil {
		return 0, err
	}
	now := m.o.Now().UnixNano()
	m.greyMu.Lock()
	defer m.greyMu.Unlock()
	l := m.greyPass[network]
	if l == nil {
		if add == 0 {
			return 0, nil
		}
		if len(m.greyPass) >= m.greyNetMax {
			return min(add, maxGreyPassed), nil
		}
		l = &greyPassLog{}
		m.greyPass[network] = l
	}
	// Keep what is strictly inside the window, as ZREMRANGEBYSCORE -inf
	// cut does on Redis.
	cut := now - int64(keep)
	i := 0
	for i < len(l.at) && l.at[i] <= cut {
		i++
	}
	if n := len(l.at) - i + add; n > maxGreyPassed {
		i += n - maxGreyPassed
	}
	i = min(i, len(l.at))
	l.at = append(l.at[:0], l.at[i:]...)
	for range min(add, maxGreyPassed) {
		l.at = append(l.at, now)
	}
	if add > 0 {
		l.keep = int64(keep)
	}
	if len(l.at) == 0 {
		delete(m.greyPass, network)
		return 0, nil
	}
	return len(l.at), nil
}

// GreylistTriplets implements Backend: the triplets held, those expired
// since the last sweep included.
func (m *Memory) GreylistTriplets(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.greyMu.Lock()
	defer m.greyMu.Unlock()
	return len(m.grey), nil
}

// sweepGrey drops the expired triplets and pass windows, releasing the
// lock every sweepChunk entries. (Deleting and inserting while a range
// over a map is under way is allowed; every step of it runs under the
// lock.)
func (m *Memory) sweepGrey(now int64) {
	m.greyMu.Lock()
	defer m.greyMu.Unlock()
	i := 0
	yield := func() {
		if i++; i%sweepChunk == 0 {
			m.greyMu.Unlock()
			m.greyMu.Lock()
		}
	}
	for k, e := range m.grey {
		if now >= e.expires {
			delete(m.grey, k)
		}
		yield()
	}
	for k, l := range m.greyPass {
		if len(l.at) == 0 || now-l.at[len(l.at)-1] >= l.keep {
			delete(m.greyPass, k)
		}
		yield()
	}
}

// greySizes reports how many triplets and networks Memory holds, for the
// tests of sweeping.
func (m *Memory) greySizes() (triplets, networks int) {
	m.greyMu.Lock()
	defer m.greyMu.Unlock()
	return len(m.grey), len(m.greyPass)
}
