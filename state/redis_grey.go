package state

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// greyBuckets is how many hash-tagged buckets the greylist is spread over:
// a triplet's key and its bucket's index share a Redis Cluster slot, so
// that one script updates both, and the buckets spread the greylist over
// the cluster.
const greyBuckets = 16

// greyIndexKeys returns the index key of every bucket, P"grey:{gN}".
func greyIndexKeys(prefix string) []string {
	keys := make([]string, greyBuckets)
	for i := range keys {
		keys[i] = prefix + "grey:{g" + strconv.FormatInt(int64(i), 16) + "}"
	}
	return keys
}

// greyKeys returns the Redis key of triplet key and its bucket's index.
func (r *Redis) greyKeys(key string) (triplet, index string) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	index = r.keyGreyIndex[h.Sum32()%greyBuckets]
	return index + ":" + key, index
}

// Greylist implements Backend with one Lua script on the Redis clock, so
// that the relays of a fleet share the triplets: a first attempt on one
// relay and a retry on another pass as on one relay.
func (r *Redis) Greylist(ctx context.Context, key string, delay, retry, keep time.Duration) (Grey, error) {
	if err := checkGrey(key, delay, retry, keep); err != nil {
		return Grey{}, err
	}
	triplet, index := r.greyKeys(key)
	var res []int64
	err := r.call(ctx, "greylist", func(ctx context.Context) error {
		var err error
		res, err = scriptGreylist.Run(ctx, r.client, []string{triplet, index},
			max(1, delay.Microseconds()), max(1, retry.Microseconds()), max(1, keep.Microseconds()), key).Int64Slice()
		return err
	})
	if err != nil {
		return Grey{}, err
	}
	if len(res) != 5 {
		return Grey{}, fmt.Errorf("state: redis greylist: unexpected reply %v", res)
	}
	return Grey{
		Pass:      res[0] == 1,
		New:       res[1] == 1,
		Wait:      time.Duration(res[2]) * time.Microsecond,
		Delayed:   time.Duration(res[3]) * time.Microsecond,
		FirstPass: res[4] == 1,
	}, nil
}

// GreylistPassed implements Backend with a sorted set per network on the
// Redis clock.
func (r *Redis) GreylistPassed(ctx context.Context, network string, add int, keep time.Duration) (int, error) {
	if err := checkGreyPassed(network, add, keep); err != nil {
		return 0, err
	}
	member := r.instance + ":" + strconv.FormatUint(r.seq.Add(1), 10)
	var n int64
	err := r.call(ctx, "greylist passed", func(ctx context.Context) error {
		var err error
		n, err = scriptGreyPassed.Run(ctx, r.client, []string{r.o.Prefix + "greypass:" + network},
			max(1, keep.Microseconds()), min(add, maxGreyPassed), maxGreyPassed, member).Int64()
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// GreylistTriplets implements Backend: the sizes of the buckets' indexes,
// each trimmed first of what has expired, read in one pipeline (split by
// node with Cluster). No SCAN.
func (r *Redis) GreylistTriplets(ctx context.Context) (int, error) {
	total := 0
	err := r.call(ctx, "greylist triplets", func(ctx context.Context) error {
		cmds := make([]*redis.Cmd, greyBuckets)
		_, err := r.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i, k := range r.keyGreyIndex {
				cmds[i] = scriptGreyCount.EvalSha(ctx, pipe, []string{k})
			}
			return nil
		})
		if err != nil && !isReply(err) {
			return err
		}
		total = 0
		for i, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				// Not loaded yet on this server (new, restarted, failed
				// over): running it on its own loads it.
				c = scriptGreyCount.Run(ctx, r.client, []string{r.keyGreyIndex[i]})
			}
			n, err := c.Int64()
			if err != nil {
				return err
			}
			total += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}
