package state

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Redis backend. Each runs atomically on the
// server; the keys a script touches share a hash tag so that they live in
// one slot of a Redis Cluster. Numbers that Lua computes are formatted with
// %.0f before they go back to Redis: Lua's own number-to-string conversion
// keeps only 14 significant digits.

// scriptBanAdd stores a ban, indexes its expiry and announces it.
// KEYS: bans hash, expiry zset. ARGV: field, ban JSON, expiry in Unix ms
// ("0": never), channel, event.
var scriptBanAdd = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '0' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
`)

// scriptBanDel deletes a ban and announces it if there was one.
// KEYS: bans hash, expiry zset. ARGV: field, channel, event.
var scriptBanDel = redis.NewScript(`
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return n
`)

// scriptBanSync deletes the bans expired at ARGV[1] (Unix ms) and returns
// all the others as HGETALL does. KEYS: bans hash, expiry zset.
var scriptBanSync = redis.NewScript(`
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, f in ipairs(gone) do
  redis.call('HDEL', KEYS[1], f)
end
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
`)

// scriptRefusal is the sliding window of refusals: drop what is at or
// before the cut, add this one, cap the set, refresh its TTL, return the
// count and the most recent members.
// KEYS: the key's zset. ARGV: now (µs), cut (µs), member, cap, ttl (ms),
// how many recent members.
var scriptRefusal = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[4])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {n, redis.call('ZRANGE', KEYS[1], -tonumber(ARGV[6]), -1)}
`)

// scriptGCRA is the generic cell rate algorithm on the Redis clock (TIME),
// so that every relay of the fleet measures against the same clock. The
// key holds the theoretical arrival time (TAT) in µs; it expires when the
// limit is back to full. The arithmetic is Go's gcra, in µs. Before the
// decision, forced units are added unconditionally: units a relay
// already admitted on its own (see redis_local.go).
// KEYS: the key. ARGV: limit, period (µs), cost, forced.
// Returns {allowed (0/1), remaining, retry after (µs), TAT (µs), now (µs)}.
var scriptGCRA = redis.NewScript(`
local limit = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local forced = tonumber(ARGV[4] or 0)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = per / limit
local tat = now
local v = redis.call('GET', KEYS[1])
if v then
  tat = tonumber(v)
  if tat == nil or tat < now then tat = now end
end
tat = tat + emission * forced
local lag = now - tat
local diff = lag - emission * cost + per
local allowed, remaining, retry = 1, 0, 0
if diff < 0 then
  allowed = 0
  remaining = math.floor((lag + per) / emission)
  if remaining < 0 then remaining = 0 end
  retry = math.ceil(-diff)
else
  remaining = math.floor(diff / emission)
  tat = tat + emission * cost
end
if forced > 0 or (allowed == 1 and cost > 0) then
  local ttl = math.ceil((tat - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl))
end
return {allowed, remaining, retry, tat, now}
`)

// scriptGCRAAdd adds units already admitted to the TATs of many keys at
// once (a relay's flush of its local counts, redis_local.go): one script
// for a whole batch, so its cost is mostly that of GET and SET. All keys
// must be on one server (not with Cluster).
// KEYS: the keys. ARGV: for each key, limit, period (µs), units.
// Returns {now (µs), TAT of each key (µs)...}.
var scriptGCRAAdd = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {now}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[3*i-1]) / tonumber(ARGV[3*i-2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
  if tat < now then tat = now end
  tat = tat + emission * tonumber(ARGV[3*i])
  local ttl = math.ceil((tat - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl))
  out[i+1] = tat
end
return out
`)

// scriptStats stores a relay's statistics with a TTL and indexes the
// relay in a zset scored by its document's expiry (Redis clock, ms),
// dropping the index entries that have expired.
// KEYS: index zset, document key. ARGV: document, ttl (ms), relay.
var scriptStats = redis.NewScript(`
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', ms + tonumber(ARGV[2])), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', ms))
return 1
`)

// scriptGreylist decides one attempt of a greylist triplet on the Redis
// clock (TIME), with the same arithmetic as Memory.Greylist, in µs. The
// triplet's value is "w<first attempt>" while it waits and
// "p<delayed>:<last use>" once it passed; the decision is made on these
// times, the key's TTL (the retry window, or keep) only collects the
// garbage. The bucket's index, a zset of triplets scored by when their key
// expires (a millisecond late, so that a triplet gone from the index is
// gone from the script's view too), is trimmed here of what has expired:
// each member is removed once, so the work is bounded by the inserts.
// KEYS: the triplet, its bucket's index. ARGV: delay, retry, keep (µs),
// the index member.
// Returns {pass (0/1), new (0/1), wait (µs), delayed (µs), first pass (0/1)}.
var scriptGreylist = redis.NewScript(`
local delay = tonumber(ARGV[1])
local retry = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function remember(v, ttl)
  local ms = math.ceil(ttl / 1000)
  redis.call('SET', KEYS[1], v, 'PX', string.format('%.0f', ms))
  redis.call('ZADD', KEYS[2], string.format('%.0f', now + ms * 1000 + 1000), ARGV[4])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
local v = redis.call('GET', KEYS[1])
if v then
  local delayed, last = string.match(v, '^p(%d+):(%d+)$')
  if delayed and now - tonumber(last) < keep then
    remember('p' .. delayed .. ':' .. string.format('%.0f', now), keep)
    return {1, 0, 0, tonumber(delayed), 0}
  end
  local first = string.match(v, '^w(%d+)$')
  if first then
    local age = now - tonumber(first)
    if age < delay then
      return {0, 0, delay - age, 0, 0}
    end
    if age < retry then
      local d = string.format('%.0f', age)
      remember('p' .. d .. ':' .. string.format('%.0f', now), keep)
      return {1, 0, 0, age, 1}
    end
  end
end
remember('w' .. string.format('%.0f', now), retry)
return {0, 1, delay, 0, 0}
`)

// scriptGreyCount trims a greylist bucket's index of what has expired on
// the Redis clock and returns how many triplets it still holds.
// KEYS: the index.
var scriptGreyCount = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('ZCARD', KEYS[1])
`)

// scriptGreyPassed is the sliding window of the passes of one network on
// the Redis clock: with add 0 it only counts what is inside the window;
// otherwise it drops what is at or before the cut, adds add members, caps
// the set and refreshes its TTL.
// KEYS: the network's zset. ARGV: keep (µs), add, cap, a unique member
// prefix.
var scriptGreyPassed = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local keep = tonumber(ARGV[1])
local add = tonumber(ARGV[2])
local cut = string.format('%.0f', now - keep)
if add == 0 then
  return redis.call('ZCOUNT', KEYS[1], '(' .. cut, '+inf')
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cut)
local score = string.format('%.0f', now)
for i = 1, add do
  redis.call('ZADD', KEYS[1], score, ARGV[4] .. ':' .. i)
end
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[3])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(keep / 1000)))
return n
`)
