package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// run is the backend's goroutine: it subscribes to the ban channel,
// resynchronises the replica, applies the events as they come, resyncs
// every ResyncInterval, and on any failure marks Redis down and starts
// again after a backoff.
func (r *Redis) run() {
	defer close(r.done)
	first := true
	signal := func() {
		if first {
			first = false
			close(r.first)
		}
	}
	defer signal()
	backoff := minBackoff
	for {
		ps, err := r.connect()
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.setDown(fmt.Errorf("connect: %w", err))
			r.o.Logger.Debug("state backend: reconnect failed", "err", err, "retry_in", backoff)
			signal()
			if !r.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		r.setUp()
		signal()
		err = r.receive(ps)
		r.dropPubSub(ps)
		if r.ctx.Err() != nil {
			return
		}
		r.setDown(err)
		if !r.sleep(backoff) {
			return
		}
	}
}

// sleep waits d, or less if the backend is closed, and reports whether it
// is still open.
func (r *Redis) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// connect subscribes to the ban channel, then resyncs: subscribing first
// means no event between the two is lost.
func (r *Redis) connect() (*redis.PubSub, error) {
	ps := r.client.Subscribe(r.ctx)
	if !r.setPubSub(ps) {
		return nil, r.ctx.Err()
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	err := ps.Subscribe(ctx, r.channel)
	var msg any
	if err == nil {
		msg, err = ps.ReceiveTimeout(ctx, r.o.Timeout)
	}
	cancel()
	if err == nil {
		if _, ok := msg.(*redis.Subscription); !ok {
			err = fmt.Errorf("subscribe %s: unexpected reply %T", r.channel, msg)
		}
	}
	if err == nil {
		err = r.resync()
	}
	if err != nil {
		r.dropPubSub(ps)
		return nil, err
	}
	return ps, nil
}

// receive applies the ban events and resyncs periodically until the
// subscription or a resync fails.
func (r *Redis) receive(ps *redis.PubSub) error {
	next := time.Now().Add(r.o.ResyncInterval)
	for {
		wait := time.Until(next)
		if wait <= 0 {
			if err := r.resync(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
			err := ps.Ping(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping subscriber: %w", err)
			}
			next = time.Now().Add(r.o.ResyncInterval)
			continue
		}
		msg, err := ps.ReceiveTimeout(r.ctx, wait)
		if err != nil {
			if r.ctx.Err() != nil {
				return r.ctx.Err()
			}
			if isTimeout(err) {
				continue
			}
			return fmt.Errorf("receive ban events: %w", err)
		}
		if m, ok := msg.(*redis.Message); ok {
			r.applyEvent(m.Payload)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// resync deletes the expired bans from Redis, reads all the others and
// makes them the content of the replica.
func (r *Redis) resync() error {
	ctx, cancel := context.WithTimeout(r.ctx, resyncFactor*r.o.Timeout)
	defer cancel()
	now := r.o.Now()
	kv, err := scriptBanSync.Run(ctx, r.client, []string{r.keyBans, r.keyBanExpiry},
		strconv.FormatInt(now.UnixMilli(), 10)).StringSlice()
	if err != nil {
		return fmt.Errorf("resync bans: %w", err)
	}
	bans := make([]Ban, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		b, err := decodeBan(kv[i], kv[i+1])
		if err != nil {
			if r.badSeen[kv[i]] != kv[i+1] {
				r.badSeen[kv[i]] = kv[i+1]
				r.o.Logger.Error("state: ignoring unreadable ban in redis", "key", r.keyBans, "field", kv[i], "err", err)
			}
			continue
		}
		if !b.expired(now) {
			bans = append(bans, b)
		}
	}
	if r.replica.replace(bans) {
		r.o.Logger.Debug("state: ban replica resynchronised", "bans", len(bans))
	}
	return nil
}

// decodeBan decodes a field of the bans hash.
func decodeBan(field, js string) (Ban, error) {
	var b Ban
	if err := json.Unmarshal([]byte(js), &b); err != nil {
		return Ban{}, err
	}
	p, err := normPrefix(b.Prefix)
	if err != nil {
		return Ban{}, err
	}
	if p.String() != field {
		return Ban{}, fmt.Errorf("prefix %s stored under %q", p, field)
	}
	b.Prefix = p
	return b, nil
}

// applyEvent applies one published ban change to the replica.
func (r *Redis) applyEvent(payload string) {
	var ev banEvent
	if err := json.Unmarshal([]byte(payload), &ev); err != nil {
		r.o.Logger.Warn("state: ignoring unreadable ban event", "err", err)
		return
	}
	switch ev.Op {
	case "add":
		if ev.Ban == nil {
			break
		}
		p, err := normPrefix(ev.Ban.Prefix)
		if err != nil {
			r.o.Logger.Warn("state: ignoring ban event", "from", ev.Relay, "err", err)
			return
		}
		b := *ev.Ban
		b.Prefix = p
		if b.expired(r.o.Now()) {
			r.replica.del(p)
		} else {
			r.replica.put(b)
		}
	case "del":
		if p, err := normPrefix(ev.Prefix); err == nil {
			r.replica.del(p)
		}
	default:
		r.o.Logger.Debug("state: ignoring ban event", "op", ev.Op, "from", ev.Relay)
	}
}

// setPubSub records the subscriber's connection so that setDown and Close
// can interrupt it; it refuses (closing ps) once the backend is closed.
func (r *Redis) setPubSub(ps *redis.PubSub) bool {
	r.psMu.Lock()
	defer r.psMu.Unlock()
	if r.ctx.Err() != nil {
		_ = ps.Close()
		return false
	}
	r.ps = ps
	return true
}

// dropPubSub closes ps and forgets it.
func (r *Redis) dropPubSub(ps *redis.PubSub) {
	r.psMu.Lock()
	if r.ps == ps {
		r.ps = nil
	}
	r.psMu.Unlock()
	_ = ps.Close()
}

// closePubSub closes the current subscriber connection, which makes the
// loop notice and reconnect (or stop, once closed).
func (r *Redis) closePubSub() {
	r.psMu.Lock()
	ps := r.ps
	r.ps = nil
	r.psMu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

// setDown records that Redis failed. On the change from up (or unknown)
// it calls OnUp(false) and wakes the loop to reconnect; it warns at most
// once every warnEvery, however many calls fail.
func (r *Redis) setDown(err error) {
	if r.ctx.Err() != nil {
		return // closed: not an outage
	}
	r.hmu.Lock()
	now := r.o.Now()
	changed := r.hstate != stateDown
	if changed {
		r.hstate = stateDown
		r.up.Store(false)
		r.downSince = now
		r.warned = false
	}
	switch {
	case r.lastWarn.IsZero() || now.Sub(r.lastWarn) >= warnEvery:
		r.o.Logger.Warn("state backend unreachable", "addrs", r.o.Addrs,
			"down_for", now.Sub(r.downSince).Round(time.Millisecond), "err", err)
		r.lastWarn = now
		r.warned = true
	case changed:
		r.o.Logger.Debug("state backend unreachable (warned less than a minute ago)", "err", err)
	}
	if changed && r.o.OnUp != nil {
		r.o.OnUp(false)
	}
	r.hmu.Unlock()
	if changed {
		r.closePubSub()
	}
}

// setUp records that Redis answers again.
func (r *Redis) setUp() {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	prev := r.hstate
	if prev == stateUp {
		return
	}
	r.hstate = stateUp
	r.up.Store(true)
	switch {
	case prev == stateDown && r.warned:
		r.o.Logger.Info("state backend reachable again", "addrs", r.o.Addrs,
			"down_for", r.o.Now().Sub(r.downSince).Round(time.Millisecond))
	case prev == stateDown:
		r.o.Logger.Debug("state backend reachable again", "addrs", r.o.Addrs)
	default:
		r.o.Logger.Info("state backend connected", "addrs", r.o.Addrs, "bans", r.replica.size())
	}
	if r.o.OnUp != nil {
		r.o.OnUp(true)
	}
}
