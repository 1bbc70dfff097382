package listen

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// Refusal warnings are rate-limited per listener and reason, and count
// what they stand for; the ones held back are written at the end of the
// interval, or when the listener closes.
func TestGuardRefusalLogs(t *testing.T) {
	const tooMany, notAllowed = "connection refused: too many connections", "connection refused: peer not allowed"
	tests := []struct {
		name     string
		interval time.Duration
		close    bool     // close the listener after the refusals
		want     []string // with an interval of an hour: each line of each kind, in order
	}{
		{"within the interval, one line", time.Hour, false, []string{
			"reason=max_connections limit=1 peer=127.0.0.1 refused=1",
			"reason=not_allowed peer=127.0.0.3 refused=1",
		}},
		{"held back until the listener closes", time.Hour, true, []string{
			"reason=max_connections limit=1 peer=127.0.0.1 refused=1",
			"reason=max_connections limit=1 peer=127.0.0.2 refused=5", // the last peer, with the count
			"reason=not_allowed peer=127.0.0.3 refused=1",
			"reason=not_allowed peer=127.0.0.3 refused=1",
		}},
		{"held back until the end of the interval", 10 * time.Millisecond, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			var buf testutil.SyncBuffer
			g := NewGuard(GuardOptions{
				Logger: slog.New(slog.NewTextHandler(&buf, nil)),
				Allow:  func(ip netip.Addr) bool { return ip != netip.MustParseAddr("127.0.0.3") },
				Limits: func() Limits { return Limits{MaxConnections: 1} },
			})
			g.logInterval = tt.interval
			dial, ln := echoServer(t, g, "tcp")
			first, err := dial("127.0.0.1")
			is.NoErr(err)
			defer first.Close()
			is.True(served(first))
			for _, from := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.3", "127.0.0.1", "127.0.0.1", "127.0.0.3", "127.0.0.1", "127.0.0.2"} {
				c, err := dial(from)
				is.NoErr(err)
				is.True(!served(c)) // refused
				c.Close()
			}
			if tt.close {
				is.NoErr(ln.Close())
			}
			// Every refusal is counted in some line: 6 over the limit, 2
			// not allowed.
			sum := func(msg string) int {
				n := 0
				for _, l := range logLines(&buf, msg) {
					var k int
					fmt.Sscanf(l[strings.LastIndex(l, "refused=")+len("refused="):], "%d", &k)
					n += k
				}
				return n
			}
			if tt.want == nil {
				testutil.WaitFor(t, "every refusal in a line", func() bool { return sum(tooMany) == 6 && sum(notAllowed) == 2 })
				is.True(len(logLines(&buf, tooMany)) >= 2) // the first at once, then the rest
				return
			}
			got := append(logLines(&buf, tooMany), logLines(&buf, notAllowed)...)
			is.Equal(len(got), len(tt.want))
			for i, l := range got {
				is.True(strings.Contains(l, "level=WARN"))
				is.True(strings.Contains(l, "protocol=echo listener=127.0.0.1:"))
				if !strings.HasSuffix(l, tt.want[i]) {
					t.Errorf("line %q, want it to end in %q", l, tt.want[i])
				}
			}
		})
	}
}

// Accept errors have their own rate-limited line, which says when the
// listener tries again.
func TestGuardAcceptErrorLogs(t *testing.T) {
	is := is.New(t)
	var buf testutil.SyncBuffer
	g := NewGuard(GuardOptions{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	g.logInterval = time.Hour
	fake := newFakeListener([]error{acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE)}, pipeEnd(t))
	ln := g.Wrap(fake, "milter")
	c, err := accept(t, ln)
	is.NoErr(err)
	c.Close()
	lines := logLines(&buf, "accept failed; retrying")
	is.Equal(len(lines), 1) // three errors, one line
	is.True(strings.Contains(lines[0], `level=WARN msg="accept failed; retrying" protocol=milter listener=127.0.0.1:10060 error="accept tcp: accept4: too many open files" errors=1 retry_in=5ms`))
	is.NoErr(ln.Close())
	lines = logLines(&buf, "accept failed; retrying")
	is.Equal(len(lines), 2) // the rest, at close
	is.True(strings.Contains(lines[1], `error="accept tcp: accept4: too many open files in system" errors=2 retry_in=20ms`))
}
