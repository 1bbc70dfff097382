package state

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// allow runs the GCRA script for key within the Timeout, failing at once
// while Redis is known to be down.
func (r *Redis) allow(ctx context.Context, key string, args ...any) ([]int64, error) {
	var res []int64
	err := r.call(ctx, "rate limit", func(ctx context.Context) error {
		var err error
		res, err = scriptGCRA.Run(ctx, r.client, []string{key}, args...).Int64Slice()
		return err
	})
	return res, err
}

// isReply reports whether err is an error reply from Redis (a script
// error, WRONGTYPE, NOSCRIPT): Redis answered.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}
