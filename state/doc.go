// Package state holds the dynamic state that the relays of a fleet share:
// bans, the refusal counts behind automatic bans, rate limits,
// greylisting and fleet statistics.
//
// # Backends
//
// A Backend is either Memory, for a single relay, which needs nothing but
// the process (bans optionally persisted to a bbolt file so that they
// survive restarts), or Redis, for a fleet, where every relay sees the same
// state. Both behave alike; one conformance suite runs against Memory,
// Redis on miniredis, on a real redis-server and on a one-node Redis
// Cluster.
//
// Banned is on the path of every connection, so it never touches the
// network: each backend keeps a replica of the bans in memory, an
// immutable bart table behind an atomic pointer, read without a lock and
// without allocating; writers derive a new table copy-on-write and swap it
// in. With Redis the replica is kept current by events: every change is
// written and PUBLISHed by one Lua script, and each relay's subscriber
// applies it as it arrives (milliseconds, well within the promised
// second). A full resynchronisation every ResyncInterval (10s), and right
// after every (re)connection, repairs anything missed; the subscription is
// made before the resynchronisation, so no change falls between the two.
// Redis is authoritative: after a resynchronisation the replica is what
// Redis holds, so a Redis restarted without persistence empties the bans
// of the whole fleet. Run Redis with an AOF or RDB snapshots.
//
// # Clocks
//
// Ban expiry is checked against each relay's clock (the Now option), in
// Banned itself, so an expired ban stops matching at once everywhere; the
// resynchronisation deletes expired bans from Redis, and Memory sweeps them
// from memory and from its file every minute. The refusal windows also use
// the relay's clock: a skew of d between relays moves a window's edge by
// d. Rate limits, greylisting and the expiry of statistics use the Redis
// server's clock (TIME, key TTLs), one clock for the fleet.
//
// # Greylisting
//
// Greylist decides an attempt of a triplet (client network, sender,
// recipient) in one Lua script, atomically, on the Redis clock, with the
// arithmetic of Memory; the key's TTL (the retry window while the
// triplet waits, keep once it passed, renewed by every use) removes
// expired triplets without a scan. The triplets are spread over 16
// buckets, each with its own hash tag {gN}: a triplet's key and its
// bucket's index, a sorted set that GreylistTriplets counts, share a slot,
// so that one script updates both on a Redis Cluster. Memory keeps the
// triplets in a map, treats an expired one as absent when it meets it,
// and removes expired ones in its periodic sweep, a few thousand entries
// per hold of its lock; it remembers at most 1,000,000 triplets and lets
// new ones pass, unremembered, past that.
//
// # Key layout in Redis
//
// Every key and the channel start with Prefix (P, default "smtpi:"). The
// hash tags {bans} and {stats} keep each group of keys that one script
// touches in one Redis Cluster slot; refusal, rate and greylist pass keys
// are used one at a time and spread over the cluster, greylist triplets
// over 16 slots (N is the bucket, 0 to f, from an FNV-1a hash of KEY).
//
//	P{bans}            hash    field: prefix ("192.0.2.0/24"), value: Ban as JSON
//	P{bans}:expiry     zset    member: prefix of an expiring ban, score: expiry (Unix ms)
//	Pbans:events       channel {"op":"add","ban":{...},"relay":"a"} or {"op":"del","prefix":"...","relay":"a"}
//	Prefusals:KEY      zset    member: "µs:instance:seq|detail", score: relay clock (µs); TTL: the window
//	Prate:KEY          string  GCRA theoretical arrival time (µs, Redis clock); TTL: until the limit is full again
//	Pgrey:{gN}:KEY     string  "w<first attempt>" while waiting, "p<delayed>:<last use>" once passed (µs, Redis clock); TTL: the retry window, then keep
//	Pgrey:{gN}         zset    member: KEY, score: when its key expires, 1ms late (Unix µs, Redis clock); trimmed by every script that touches it
//	Pgreypass:NETWORK  zset    member: "instance:seq:i", score: Redis clock (µs) of a pass; TTL: keep
//	P{stats}           zset    member: relay, score: expiry of its document (Unix ms, Redis clock)
//	P{stats}:RELAY     string  the relay's last document; TTL: as published
//
// A single address in RedisOptions.Addrs is a plain server, several are
// the seeds of a Redis Cluster, and with MasterName they are Sentinels.
//
// # Failure semantics
//
// Callers fail open; the backend's job is to fail fast. Every Redis call
// is bounded by Timeout (50ms): a context deadline, plus the client's dial,
// read, write and pool timeouts, with at most one retry inside the same
// budget. When a call fails (connection refused or lost, timeout, an
// error reply such as LOADING), Redis is marked down: Up() turns false,
// OnUp(false) is called once, and one slog.Warn "state backend
// unreachable" is logged, then at most one a minute while the outage
// lasts, not one per call. While down, every method other than Bans and
// Banned returns at once an error wrapping ErrUnavailable, without
// waiting for the network; Bans and Banned keep answering from the
// replica. The backend's goroutine reconnects with backoff (100ms doubling
// to 5s), resynchronises, and then Up() turns true, OnUp(true) is called
// and "state backend reachable again" is logged once. OpenRedis does not
// fail when Redis is down: it starts with an empty replica, Up() false,
// and keeps trying. The background resynchronisation, which reads the
// whole ban list and is on no caller's path, may take 20 Timeouts.
//
// # How far over a limit the fleet can go
//
// Allow is the generic cell rate algorithm (GCRA): with T = per/limit, it
// admits a burst of limit units, then one unit every T; over any interval
// of length t at most limit + t/T units are admitted.
//
// A limit below 1000 units a period is decided on Redis for every
// request: one Lua script reads and writes the key's theoretical arrival
// time atomically on the key's server, on that server's clock, so the
// fleet as a whole admits exactly what one limiter would: concurrency
// between relays and skew between their clocks add nothing, the error is
// zero.
//
// A limit of 1000 or more is decided by each relay on its own while the
// key is far from it (redis_local.go): a relay admits a request while, by
// what it knows (the fleet's TAT from Redis at most one flush interval,
// 50 ms, ago, plus its own admissions since), at most a quarter of the
// burst is used, and adds its admissions to Redis every 50 ms; past a
// quarter every request is decided on Redis as above, with the relay's
// admissions first. One relay alone is exact. A fleet exceeds such a
// limit only when, on one key, the other relays admit more than three
// quarters of the burst within one flush interval unseen by a relay (at
// least 15,000 units a second for the smallest such limit), and then by
// at most a quarter of the burst per relay. This keeps a Redis round trip
// off most requests (one script per key per flush instead of one per
// request).
//
// The only other excess comes from failing open: a request whose call
// returned an error because Redis failed or was too slow, and every
// request while Redis is down, is admitted by the caller without being
// counted. (A call that timed out after its script ran on Redis is
// counted although the caller saw an error; that errs on the safe side.)
// With Sentinel, a failover to a replica that missed the last writes can
// also hand out those units once more, as Redis replication is
// asynchronous. Memory runs the same algorithm in process.
//
// github.com/go-redis/redis_rate is not used: it puts its keys under its
// own fixed "rate:" prefix, outside Prefix (and outside an ACL key pattern
// such as ~smtpi:*), and its arithmetic is in floating-point seconds since
// 2017; the script here is as short, keeps the keys under Prefix and
// computes in microseconds of Unix time with the same formulas as Memory,
// so that the two decide alike (tested on random request sequences).
package state
