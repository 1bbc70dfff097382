package state

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/matryer/is"
	"github.com/redis/go-redis/v9"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// TestAllowConcurrentStaysExact: many concurrent calls admit exactly the
// limit, and each caller gets its own key's answer.
func TestAllowConcurrentStaysExact(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	r, err := OpenRedis(RedisOptions{Addrs: []string{mr.Addr()}, Timeout: 2 * time.Second, Logger: testutil.Logger(t)})
	is.NoErr(err)
	defer r.Close()
	is.True(r.Up())
	var allowedA, allowedB atomic.Int64
	var wg sync.WaitGroup
	for i := range 400 {
		wg.Go(func() {
			key, n := "a", &allowedA
			if i%2 == 1 {
				key, n = "b", &allowedB
			}
			d, err := r.Allow(context.Background(), key, 50, time.Hour, 1)
			if err != nil {
				t.Error(err)
				return
			}
			if d.Allowed {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	is.Equal(allowedA.Load(), int64(50)) // exactly the limit of key a
	is.Equal(allowedB.Load(), int64(50)) // and of key b
}

// TestAllowAfterScriptFlush: a Redis that lost its scripts (a restart, a
// failover, SCRIPT FLUSH) answers NOSCRIPT; the call loads the script
// again and succeeds.
func TestAllowAfterScriptFlush(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	r, err := OpenRedis(RedisOptions{Addrs: []string{mr.Addr()}, Timeout: 2 * time.Second, Logger: testutil.Logger(t)})
	is.NoErr(err)
	defer r.Close()
	d, err := r.Allow(context.Background(), "k", 2, time.Hour, 1)
	is.NoErr(err)
	is.True(d.Allowed)
	raw := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer raw.Close()
	is.NoErr(raw.ScriptFlush(context.Background()).Err())
	exists, err := raw.ScriptExists(context.Background(), scriptGCRA.Hash()).Result()
	is.NoErr(err)
	is.Equal(exists, []bool{false}) // the script is gone
	d, err = r.Allow(context.Background(), "k", 2, time.Hour, 1)
	is.NoErr(err)
	is.True(d.Allowed)
}

// TestAllowLocalSingleRelay: a limit decided locally between flushes
// still admits exactly the limit on one relay: its own admissions count
// at once, and near the limit every request goes to Redis with them.
func TestAllowLocalSingleRelay(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	r, err := OpenRedis(RedisOptions{Addrs: []string{mr.Addr()}, Timeout: 2 * time.Second, Logger: testutil.Logger(t)})
	is.NoErr(err)
	defer r.Close()
	allowed := 0
	for range 1500 {
		d, err := r.Allow(context.Background(), "hot", localMinLimit, time.Hour, 1)
		is.NoErr(err)
		if d.Allowed {
			allowed++
		}
	}
	is.Equal(allowed, localMinLimit)
}

// TestAllowLocalFleet: two relays deciding locally between flushes admit
// the limit, and at most a localShare-th of it more each (the bound in
// redis_local.go), however their requests interleave; and the counts
// reach Redis.
func TestAllowLocalFleet(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	open := func(name string) *Redis {
		r, err := OpenRedis(RedisOptions{Addrs: []string{mr.Addr()}, Relay: name, Timeout: 2 * time.Second, Logger: testutil.Logger(t)})
		is.NoErr(err)
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := open("a"), open("b")
	allowed := 0
	for i := range 3000 {
		r := a
		if i%2 == 1 {
			r = b
		}
		d, err := r.Allow(context.Background(), "shared", localMinLimit, time.Hour, 1)
		is.NoErr(err)
		if d.Allowed {
			allowed++
		}
	}
	t.Logf("allowed %d of 3000 with a limit of %d on two relays", allowed, localMinLimit)
	is.True(allowed >= localMinLimit)                            // never less than the limit
	is.True(allowed <= localMinLimit+2*localMinLimit/localShare) // the documented bound
	// Once flushed, Redis holds the whole burst: asked on Redis (cost 0),
	// nothing remains for a third relay.
	c := open("c")
	testutil.WaitFor(t, "the flushes", func() bool {
		d, err := c.Allow(context.Background(), "shared", localMinLimit, time.Hour, 0)
		return err == nil && d.Remaining == 0
	})
}
