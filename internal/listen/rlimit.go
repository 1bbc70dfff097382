package listen

import (
	"math"
	"syscall"
)

// minMaxConnections is the least default connection limit, however low
// the file descriptor limit.
const minMaxConnections = 16

// DefaultMaxConnections is the connection limit that [server]
// max_connections = 0 stands for: MaxConnectionsFor the process's soft
// RLIMIT_NOFILE (which the Go runtime raises to the hard limit at start).
// If the limit cannot be read, it assumes the historical 1024.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return MaxConnectionsFor(1024)
	}
	return MaxConnectionsFor(rl.Cur)
}

// MaxConnectionsFor returns the connection limit for a file descriptor
// limit of nofile: three quarters of it, and never less than 16.
//
// Each policy or milter connection holds one descriptor. The quarter
// left over is for what the connections make the daemon open besides:
// a UDP socket per DNS list query in flight (a session checks its lists
// in parallel, and a cache miss on several lists holds several sockets
// at once), the listeners, the metrics and admin connections, and the
// log and list files. With 1024 that leaves 256 descriptors, more than
// enough for the few hundred DNS queries a loaded relay has in flight at
// once (answers are cached, and most connections idle between requests);
// with the usual systemd or container limits (524288 and more) it is far
// more. Should the descriptors still run out, accept retries (see Guard)
// and a DNS lookup that cannot open a socket counts as not listed, so
// mail flows on either way.
func MaxConnectionsFor(nofile uint64) int {
	n := nofile / 4 * 3
	n += nofile % 4 * 3 / 4
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return max(int(n), minMaxConnections)
}
