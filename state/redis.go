package state

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisOptions configures OpenRedis.
type RedisOptions struct {
	// Addrs are the Redis servers: one address is a plain server, several
	// are the seeds of a Redis Cluster, and with MasterName they are the
	// Sentinels.
	Addrs []string
	// MasterName is the Sentinel master name; "" means no Sentinel.
	MasterName string
	// DB is the database number (not with Cluster).
	DB int
	// Username and Password authenticate to Redis.
	Username, Password string
	// SentinelUsername and SentinelPassword authenticate to the
	// Sentinels, when they require it.
	SentinelUsername, SentinelPassword string
	// TLS, when set, is the TLS configuration for the connections.
	TLS *tls.Config
	// Prefix starts every key and channel name; "" means "smtpi:". It
	// must not contain braces, which would break the hash tags.
	Prefix string
	// Timeout bounds every Redis call, dial, read and write; 0 means
	// 50ms.
	Timeout time.Duration
	// ResyncInterval is how often the local replica of the bans is
	// compared with Redis and repaired; 0 means 10s.
	ResyncInterval time.Duration
	// Relay is this relay's name, for the logs and the ban events; ""
	// means the host name.
	Relay string
	// Now is the clock of ban expiry, of the refusal windows and of the
	// once-a-minute warning; nil means time.Now. Rate limits and the
	// expiry of statistics use the Redis server's clock.
	Now func() time.Time
	// Logger receives the backend's log; nil means slog.Default().
	Logger *slog.Logger
	// OnUp, when set, is called on every change of reachability, in
	// order, from the goroutine that saw it: OnUp(false) once when Redis
	// becomes unreachable (also when it is at start), OnUp(true) once
	// when it is reachable again. It must return quickly and must not
	// call the backend's methods other than Up, Bans and Banned.
	OnUp func(up bool)
}

const (
	defaultPrefix  = "smtpi:"
	defaultTimeout = 50 * time.Millisecond
	defaultResync  = 10 * time.Second
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
	// warnEvery is the least time between two "unreachable" warnings.
	warnEvery = time.Minute
	// resyncFactor: the background resynchronisation, which reads the
	// whole ban list and is on no caller's path, may take this many
	// Timeouts.
	resyncFactor = 20
)

// reachability of Redis, as the backend last saw it.
const (
	stateUnknown = iota
	stateUp
	stateDown
)

// Redis is the Backend of a fleet: the state lives in Redis, shared by
// all relays, and the bans are replicated into each relay's memory so that
// Banned never waits for the network. See the package documentation for
// the key layout and the failure semantics.
type Redis struct {
	o        RedisOptions
	client   redis.UniversalClient
	replica  *replica
	instance string // random, tells this backend's refusal entries apart
	seq      atomic.Uint64

	keyBans, keyBanExpiry, channel, keyStats string
	keyGreyIndex                             []string // by bucket, see greyKeys

	up        atomic.Bool
	hmu       sync.Mutex // guards the fields below and orders OnUp calls
	hstate    int
	lastWarn  time.Time
	warned    bool // whether this outage was warned about
	downSince time.Time

	psMu sync.Mutex
	ps   *redis.PubSub // the subscriber's, closed to wake it up

	badSeen map[string]string // field -> bad value already logged; loop only

	local *localLimits // rate limits decided here between flushes

	ctx       context.Context
	cancel    context.CancelFunc
	first     chan struct{} // closed after the first connection attempt
	done      chan struct{} // closed when the loop has stopped
	closeOnce sync.Once
	closeErr  error
}

var _ Backend = (*Redis)(nil)

// banEvent is what is published on the ban channel for every change.
type banEvent struct {
	Op     string       `json:"op"` // "add" or "del"
	Ban    *Ban         `json:"ban,omitempty"`
	Prefix netip.Prefix `json:"prefix,omitzero"`
	Relay  string       `json:"relay,omitempty"`
}

// OpenRedis opens a Redis backend. It does not fail when Redis is down:
// it makes one connection attempt (bounded by the timeouts), then returns
// with Up() reporting the outcome, an empty replica if Redis could not be
// read, and a goroutine that keeps reconnecting with backoff (100ms
// doubling to 5s). It fails only for invalid options.
func OpenRedis(o RedisOptions) (*Redis, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("state: redis: no address")
	}
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("state: redis: prefix %q contains a brace", o.Prefix)
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = defaultResync
	}
	if o.Relay == "" {
		o.Relay, _ = os.Hostname()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("backend", "redis", "relay", o.Relay)
	id := make([]byte, 8)
	_, _ = rand.Read(id)

	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 o.Addrs,
		MasterName:            o.MasterName,
		DB:                    o.DB,
		Username:              o.Username,
		Password:              o.Password,
		SentinelUsername:      o.SentinelUsername,
		SentinelPassword:      o.SentinelPassword,
		TLSConfig:             o.TLS,
		ClientName:            "smtp-interceptor@" + o.Relay,
		DialTimeout:           o.Timeout,
		DialerRetries:         1,
		ReadTimeout:           o.Timeout,
		WriteTimeout:          o.Timeout,
		PoolTimeout:           o.Timeout,
		ContextTimeoutEnabled: true,
		// One retry, within the same Timeout, so that the first call on
		// a connection that died with a restarted server succeeds.
		MaxRetries:               1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	ctx, cancel := context.WithCancel(context.Background())
	r := &Redis{
		o:            o,
		client:       client,
		replica:      newReplica(o.Now),
		instance:     hex.EncodeToString(id),
		keyBans:      o.Prefix + "{bans}",
		keyBanExpiry: o.Prefix + "{bans}:expiry",
		channel:      o.Prefix + "bans:events",
		keyStats:     o.Prefix + "{stats}",
		keyGreyIndex: greyIndexKeys(o.Prefix),
		badSeen:      make(map[string]string),
		ctx:          ctx,
		cancel:       cancel,
		first:        make(chan struct{}),
		done:         make(chan struct{}),
	}
	r.local = newLocalLimits()
	go r.local.run(r)
	go r.run()
	<-r.first
	return r, nil
}

// call runs f with the Timeout, failing at once while Redis is known to be
// down. An error marks Redis down unless it is the caller's own
// cancellation or a WRONGTYPE reply (a foreign value under one key says
// nothing about reachability).
func (r *Redis) call(ctx context.Context, op string, f func(ctx context.Context) error) error {
	if r.ctx.Err() != nil {
		return fmt.Errorf("state: redis %s: backend closed", op)
	}
	if !r.up.Load() {
		return fmt.Errorf("state: redis %s: %w", op, ErrUnavailable)
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	err := f(cctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("state: redis %s: %w", op, ctx.Err())
	case redis.HasErrorPrefix(err, "WRONGTYPE"):
		return fmt.Errorf("state: redis %s: %w", op, err)
	}
	r.setDown(err)
	return fmt.Errorf("state: redis %s: %w: %w", op, ErrUnavailable, err)
}

// AddBan implements Backend: the ban is written to Redis and published,
// in one script, then applied to the local replica.
func (r *Redis) AddBan(ctx context.Context, b Ban) error {
	b, err := prepareBan(b, r.o.Now())
	if err != nil {
		return err
	}
	js, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("state: encode ban %s: %w", b.Prefix, err)
	}
	ev, err := json.Marshal(banEvent{Op: "add", Ban: &b, Relay: r.o.Relay})
	if err != nil {
		return fmt.Errorf("state: encode ban event %s: %w", b.Prefix, err)
	}
	exp := "0"
	if !b.Expires.IsZero() {
		// Round up, so that the purge never precedes the expiry.
		exp = strconv.FormatInt((b.Expires.UnixNano()+999_999)/1_000_000, 10)
	}
	err = r.call(ctx, "add ban", func(ctx context.Context) error {
		return scriptBanAdd.Run(ctx, r.client, []string{r.keyBans, r.keyBanExpiry},
			b.Prefix.String(), js, exp, r.channel, ev).Err()
	})
	if err != nil {
		return err
	}
	r.replica.put(b)
	return nil
}

// RemoveBan implements Backend.
func (r *Redis) RemoveBan(ctx context.Context, p netip.Prefix) (bool, error) {
	p, err := normPrefix(p)
	if err != nil {
		return false, err
	}
	ev, err := json.Marshal(banEvent{Op: "del", Prefix: p, Relay: r.o.Relay})
	if err != nil {
		return false, fmt.Errorf("state: encode ban event %s: %w", p, err)
	}
	var n int64
	err = r.call(ctx, "remove ban", func(ctx context.Context) error {
		var err error
		n, err = scriptBanDel.Run(ctx, r.client, []string{r.keyBans, r.keyBanExpiry},
			p.String(), r.channel, ev).Int64()
		return err
	})
	if err != nil {
		return false, err
	}
	r.replica.del(p)
	return n > 0, nil
}

// Bans implements Backend, from the local replica.
func (r *Redis) Bans() []Ban { return r.replica.list() }

// Banned implements Backend, from the local replica.
func (r *Redis) Banned(ip netip.Addr) (Ban, bool) { return r.replica.banned(ip) }

// CountRefusal implements Backend with a sorted set per key scored by the
// relay clock (Now) in µs.
func (r *Redis) CountRefusal(ctx context.Context, key string, within time.Duration, detail string) (int, []string, error) {
	if err := checkWindow(key, within); err != nil {
		return 0, nil, err
	}
	now := r.o.Now().UnixMicro()
	cut := now - within.Microseconds()
	member := fmt.Sprintf("%d:%s:%020d|%s", now, r.instance, r.seq.Add(1), detail)
	ttl := max(1, (within+time.Millisecond-1)/time.Millisecond)
	var res []any
	err := r.call(ctx, "count refusal", func(ctx context.Context) error {
		var err error
		res, err = scriptRefusal.Run(ctx, r.client, []string{r.o.Prefix + "refusals:" + key},
			now, cut, member, maxRefusals, int64(ttl), maxRecent).Slice()
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	if len(res) != 2 {
		return 0, nil, fmt.Errorf("state: redis count refusal: unexpected reply %v", res)
	}
	n, ok := res[0].(int64)
	members, ok2 := res[1].([]any)
	if !ok || !ok2 {
		return 0, nil, fmt.Errorf("state: redis count refusal: unexpected reply %v", res)
	}
	recent := make([]string, 0, len(members))
	for _, m := range members {
		s, _ := m.(string)
		if _, d, ok := strings.Cut(s, "|"); ok {
			s = d
		}
		recent = append(recent, s)
	}
	return int(n), recent, nil
}

// ResetRefusals implements Backend.
func (r *Redis) ResetRefusals(ctx context.Context, key string) error {
	return r.call(ctx, "reset refusals", func(ctx context.Context) error {
		return r.client.Del(ctx, r.o.Prefix+"refusals:"+key).Err()
	})
}

// Allow implements Backend with GCRA in a Lua script on the Redis clock:
// atomic per key, so the fleet together never exceeds the limit.
func (r *Redis) Allow(ctx context.Context, key string, limit int, per time.Duration, cost int) (Decision, error) {
	if err := checkLimit(limit, per, cost); err != nil {
		return Decision{}, err
	}
	if d, ok, err := r.local.allow(ctx, r, key, limit, per, cost); ok {
		return d, err
	}
	res, err := r.allow(ctx, r.o.Prefix+"rate:"+key, limit, max(1, per.Microseconds()), cost, 0)
	if err != nil {
		return Decision{}, err
	}
	if len(res) < 3 {
		return Decision{}, fmt.Errorf("state: redis rate limit: unexpected reply %v", res)
	}
	return Decision{
		Allowed:    res[0] == 1,
		Remaining:  int(res[1]),
		RetryAfter: time.Duration(res[2]) * time.Microsecond,
	}, nil
}

// PublishStats implements Backend: SET with a TTL, the relay indexed in a
// sorted set.
func (r *Redis) PublishStats(ctx context.Context, relay string, doc []byte, ttl time.Duration) error {
	if relay == "" {
		return errors.New("state: empty relay name")
	}
	if ttl <= 0 {
		return fmt.Errorf("state: stats ttl %s is not positive", ttl)
	}
	ms := int64(max(1, (ttl+time.Millisecond-1)/time.Millisecond))
	return r.call(ctx, "publish stats", func(ctx context.Context) error {
		return scriptStats.Run(ctx, r.client, []string{r.keyStats, r.keyStats + ":" + relay},
			doc, ms, relay).Err()
	})
}

// FleetStats implements Backend.
func (r *Redis) FleetStats(ctx context.Context) (map[string][]byte, error) {
	out := make(map[string][]byte)
	err := r.call(ctx, "fleet stats", func(ctx context.Context) error {
		relays, err := r.client.ZRange(ctx, r.keyStats, 0, -1).Result()
		if err != nil || len(relays) == 0 {
			return err
		}
		keys := make([]string, len(relays))
		for i, rl := range relays {
			keys[i] = r.keyStats + ":" + rl
		}
		vals, err := r.client.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			if s, ok := v.(string); ok {
				out[relays[i]] = []byte(s)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Up implements Backend: whether Redis answered the last time it was
// asked.
func (r *Redis) Up() bool { return r.up.Load() }

// Name implements Backend.
func (r *Redis) Name() string { return "redis" }

// Close implements Backend: it stops the subscriber and closes the client.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.closePubSub()
		<-r.done
		if err := r.client.Close(); err != nil {
			r.closeErr = fmt.Errorf("state: close redis client: %w", err)
		}
	})
	return r.closeErr
}
