package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Rate-limit calls are the only ones on the path of every request, so
// they are grouped: each of allowWorkers goroutines takes one waiting
// call, adds whatever else is waiting (up to allowBatchMax), and sends
// them all in one pipeline (one write, one read). A call that finds a
// worker idle goes at once, alone; under load the calls that queued
// behind a pipeline in flight share the next. Every script still runs on
// its own on Redis, atomically: grouping changes no decision.
const (
	allowWorkers  = 1
	allowBatchMax = 64
	allowQueue    = 4096
)

type allowReq struct {
	key  string
	args []any
	res  chan allowRes // buffered: a worker never waits for a caller gone
}

type allowRes struct {
	vals []int64
	err  error
}

// startBatcher starts the rate-limit workers; they stop with r.ctx.
func (r *Redis) startBatcher() {
	r.allowCh = make(chan *allowReq, allowQueue)
	for range allowWorkers {
		go r.allowLoop()
	}
}

// allow runs the GCRA script for key through the workers, within the
// Timeout, failing at once while Redis is known to be down.
func (r *Redis) allow(ctx context.Context, key string, args ...any) ([]int64, error) {
	if r.ctx.Err() != nil {
		return nil, errors.New("state: redis rate limit: backend closed")
	}
	if !r.up.Load() {
		return nil, fmt.Errorf("state: redis rate limit: %w", ErrUnavailable)
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	q := &allowReq{key: key, args: args, res: make(chan allowRes, 1)}
	select {
	case r.allowCh <- q:
	case <-cctx.Done():
		return nil, r.allowTimeout(ctx, cctx)
	}
	select {
	case res := <-q.res:
		return res.vals, res.err
	case <-cctx.Done():
		return nil, r.allowTimeout(ctx, cctx)
	}
}

// allowTimeout is the error of a call that ran out of time: the caller's
// own cancellation, or Redis too slow (which marks it down).
func (r *Redis) allowTimeout(ctx, cctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("state: redis rate limit: %w", ctx.Err())
	}
	r.setDown(cctx.Err())
	return fmt.Errorf("state: redis rate limit: %w: %w", ErrUnavailable, cctx.Err())
}

func (r *Redis) allowLoop() {
	batch := make([]*allowReq, 0, allowBatchMax)
	for {
		batch = batch[:0]
		select {
		case <-r.ctx.Done():
			return
		case q := <-r.allowCh:
			batch = append(batch, q)
		}
	drain:
		for len(batch) < allowBatchMax {
			select {
			case q := <-r.allowCh:
				batch = append(batch, q)
			default:
				break drain
			}
		}
		r.runBatch(batch)
	}
}

// runBatch sends the batch's scripts in one pipeline and answers each
// caller. A script Redis does not know yet (NOSCRIPT, after a restart or
// a failover) is run again on its own, which loads it.
func (r *Redis) runBatch(batch []*allowReq) {
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	defer cancel()
	pipe := r.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, q := range batch {
		cmds[i] = scriptGCRA.EvalSha(ctx, pipe, []string{q.key}, q.args...)
	}
	_, err := pipe.Exec(ctx)
	if err != nil && !isReply(err) {
		// Not an answer from Redis: the connection failed or timed out.
		r.setDown(err)
		werr := fmt.Errorf("state: redis rate limit: %w: %w", ErrUnavailable, err)
		for _, q := range batch {
			q.res <- allowRes{err: werr}
		}
		return
	}
	for i, q := range batch {
		c := cmds[i]
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			c = scriptGCRA.Run(ctx, r.client, []string{q.key}, q.args...)
		}
		vals, err := c.Int64Slice()
		if err != nil && !isReply(err) {
			r.setDown(err)
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if err != nil {
			err = fmt.Errorf("state: redis rate limit: %w", err)
		}
		q.res <- allowRes{vals: vals, err: err}
	}
}

// isReply reports whether err is an error reply from Redis (a script
// error, WRONGTYPE, NOSCRIPT): Redis answered.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}
