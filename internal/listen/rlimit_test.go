package listen

import (
	"math"
	"syscall"
	"testing"

	"github.com/matryer/is"
)

func TestMaxConnectionsFor(t *testing.T) {
	tests := []struct {
		nofile uint64
		want   int
	}{
		{0, 16},
		{16, 16},
		{64, 48},
		{1024, 768},
		{1023, 767},
		{524288, 393216},
		{math.MaxUint64, math.MaxInt32},
	}
	for _, tt := range tests {
		is.New(t).Equal(MaxConnectionsFor(tt.nofile), tt.want)
	}
}

func TestDefaultMaxConnections(t *testing.T) {
	is := is.New(t)
	var rl syscall.Rlimit
	is.NoErr(syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	is.Equal(DefaultMaxConnections(), MaxConnectionsFor(rl.Cur))
	is.Equal(NewGuard(GuardOptions{}).lim.defaultMax, MaxConnectionsFor(rl.Cur)) // what 0 stands for
}
