package state

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// TestRedisGreylistKeys: the keys are where the package documentation
// says, with the TTLs it says, and a bucket's index is trimmed by the
// scripts that touch it.
func TestRedisGreylistKeys(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	clk := newFakeClock()
	m := startMiniredis(t)
	m.SetTime(clk.Now())
	m.ClockTTL(true)
	r := openRedis(t, RedisOptions{Addrs: []string{m.Addr()}, Now: clk.Now, Timeout: 2 * time.Second})
	advance := func(d time.Duration) { clk.Advance(d); m.SetTime(clk.Now()) }
	const delay, retry, keep = time.Minute, time.Hour, 24 * time.Hour
	bucket := func(k string) string {
		h := fnv.New32a()
		_, _ = h.Write([]byte(k))
		return "smtpi:grey:{g" + strconv.FormatUint(uint64(h.Sum32()%greyBuckets), 16) + "}"
	}
	const key = "192.0.2.0/24|a@example.org|b@example.net"
	// Another key in the same bucket, to see that it trims the index.
	other := ""
	for i := 0; other == ""; i++ {
		if k := fmt.Sprintf("198.51.100.0/24|%d@example.org|b@example.net", i); bucket(k) == bucket(key) {
			other = k
		}
	}
	idx := bucket(key)

	_, err := r.Greylist(ctx, key, delay, retry, keep)
	is.NoErr(err)
	is.True(m.Exists(idx + ":" + key))
	is.Equal(m.TTL(idx+":"+key), retry)
	members, err := m.ZMembers(idx)
	is.NoErr(err)
	is.Equal(members, []string{key})

	advance(delay)
	gr, err := r.Greylist(ctx, key, delay, retry, keep)
	is.NoErr(err)
	is.True(gr.FirstPass)
	is.Equal(m.TTL(idx+":"+key), keep) // passed: kept for keep

	n, err := r.GreylistPassed(ctx, "192.0.2.0/24", 1, keep)
	is.NoErr(err)
	is.Equal(n, 1)
	is.Equal(m.TTL("smtpi:greypass:192.0.2.0/24"), keep)

	advance(keep + time.Second)         // the index keeps a member a millisecond longer than its key
	is.True(!m.Exists(idx + ":" + key)) // gone by its TTL
	is.True(!m.Exists("smtpi:greypass:192.0.2.0/24"))
	_, err = r.Greylist(ctx, other, delay, retry, keep)
	is.NoErr(err)
	members, err = m.ZMembers(idx)
	is.NoErr(err)
	is.Equal(members, []string{other}) // the expired member was trimmed
	n, err = r.GreylistTriplets(ctx)
	is.NoErr(err)
	is.Equal(n, 1)
}

// TestRedisGreylistMatchesMemory: the Lua greylist and the Go one decide
// alike on a random sequence of attempts and passes.
func TestRedisGreylistMatchesMemory(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	clk := newFakeClock()
	m := startMiniredis(t)
	m.SetTime(clk.Now())
	m.ClockTTL(true)
	r := openRedis(t, RedisOptions{Addrs: []string{m.Addr()}, Now: clk.Now, Timeout: 2 * time.Second})
	mem := openMemory(t, MemoryOptions{Now: clk.Now, Logger: testutil.Logger(t)})
	const delay, retry, keep = 5 * time.Minute, time.Hour, 3 * time.Hour
	rnd := rand.New(rand.NewPCG(5, 6))
	var passes, news, waits int
	for i := range 400 {
		key := fmt.Sprintf("192.0.2.0/24|s%d@example.org|r@example.net", rnd.IntN(6))
		gm, err := mem.Greylist(ctx, key, delay, retry, keep)
		is.NoErr(err)
		gr, err := r.Greylist(ctx, key, delay, retry, keep)
		is.NoErr(err)
		if gm != gr {
			t.Fatalf("step %d, %s: memory %+v, redis %+v", i, key, gm, gr)
		}
		switch {
		case gm.Pass:
			passes++
		case gm.New:
			news++
		default:
			waits++
		}
		add := 0
		if gm.FirstPass {
			add = 1
		}
		nm, err := mem.GreylistPassed(ctx, "192.0.2.0/24", add, keep)
		is.NoErr(err)
		nr, err := r.GreylistPassed(ctx, "192.0.2.0/24", add, keep)
		is.NoErr(err)
		if nm != nr {
			t.Fatalf("step %d: passed count: memory %d, redis %d", i, nm, nr)
		}
		d := time.Duration(rnd.IntN(60)) * time.Second
		if rnd.IntN(15) == 0 {
			d = time.Duration(rnd.IntN(4*3600)) * time.Second
		}
		clk.Advance(d)
		m.SetTime(clk.Now())
	}
	t.Logf("%d passes, %d first attempts, %d waits", passes, news, waits)
	// The sequence exercised every outcome.
	is.True(passes > 20)
	is.True(news > 20)
	is.True(waits > 20)
}
