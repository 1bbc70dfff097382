package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// runBenchPolicy drives a policy server (any: this one, postfwd, ...) with
// realistic requests from several persistent connections, as Postfix's
// smtpd processes do, and reports throughput, latency and the actions.
func runBenchPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench policy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:10060", "policy server `address`: host:port or unix:/path")
	conns := fs.Int("c", 16, "concurrent `connections`")
	n := fs.Int("n", 100_000, "total `requests`")
	hit := fs.Float64("hit", 0.1, "`share` of clients taken from --hit-cidr (meant to be blacklisted)")
	hitCIDR := fs.String("hit-cidr", "203.0.113.0/24", "`CIDR` of the clients that hit the blacklists")
	seed := fs.Uint64("seed", 1, "random `seed`")
	clients := fs.Int("clients", 0, "draw the other clients from this `many` addresses (0: any of 198.18.0.0/15), e.g. to measure DNS cache hits")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	hitPfx, err := netip.ParsePrefix(*hitCIDR)
	if err != nil || !hitPfx.Addr().Is4() {
		fmt.Fprintf(stderr, "bench policy: --hit-cidr %q is not an IPv4 CIDR\n", *hitCIDR)
		return exitUsage
	}
	if *clients < 0 || *clients > 1<<17 {
		fmt.Fprintln(stderr, "bench policy: --clients must be between 0 and 131072")
		return exitUsage
	}
	if *conns < 1 || *n < *conns || *hit < 0 || *hit > 1 {
		fmt.Fprintln(stderr, "bench policy: need -c >= 1, -n >= -c and 0 <= --hit <= 1")
		return exitUsage
	}
	network, address := "tcp", *addr
	if p, ok := strings.CutPrefix(*addr, "unix:"); ok {
		network, address = "unix", p
	}

	per := *n / *conns
	results := make([]benchReport, *conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *conns {
		wg.Go(func() {
			results[i] = benchPolicyConn(ctx, network, address, per, policyLoad{
				rng: rand.New(rand.NewPCG(*seed, uint64(i))), hit: *hit, hitPfx: hitPfx, conn: i, clients: *clients,
			})
		})
	}
	wg.Wait()
	total := benchReport{unit: "requests", elapsed: time.Since(start), outcomes: map[string]int{}}
	for _, r := range results {
		total.n += r.n
		total.errors += r.errors
		total.lat = append(total.lat, r.lat...)
		for k, v := range r.outcomes {
			total.outcomes[k] += v
		}
	}
	fmt.Fprintf(stdout, "bench policy %s: %d connections\n", *addr, *conns)
	total.print(stdout)
	if total.errors > 0 && total.n == 0 {
		return exitFail
	}
	return exitOK
}

// policyLoad makes the requests of one connection: messages of one to
// three recipients from varied clients (RFC 2544's benchmark range
// 198.18.0.0/15, never contacted: they are only strings in the requests)
// and senders, a share of them from the blacklisted range.
type policyLoad struct {
	rng     *rand.Rand
	hit     float64
	hitPfx  netip.Prefix
	conn    int
	msg     int
	clients int // size of the client pool; 0: all of 198.18.0.0/15
}

// message returns the requests of the next message.
func (l *policyLoad) message() []string {
	l.msg++
	var client netip.Addr
	if l.rng.Float64() < l.hit {
		b := l.hitPfx.Masked().Addr().As4()
		host := uint32(l.rng.Uint32()) & (1<<(32-l.hitPfx.Bits()) - 1)
		v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
		client = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	} else {
		n := 1 << 17
		if l.clients > 0 {
			n = l.clients
		}
		v := l.rng.IntN(n) // an index into 198.18.0.0/15
		client = netip.AddrFrom4([4]byte{198, 18 + byte(v>>16), byte(v >> 8), byte(v)})
	}
	instance := strconv.Itoa(l.conn) + "." + strconv.Itoa(l.msg)
	sender := "user" + strconv.Itoa(l.rng.IntN(5000)) + "@example" + strconv.Itoa(l.rng.IntN(200)) + ".com"
	helo := "mail" + strconv.Itoa(l.rng.IntN(1000)) + ".example.net"
	rcpts := 1 + l.rng.IntN(3)
	out := make([]string, 0, rcpts)
	for r := range rcpts {
		out = append(out, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
			"client_address="+client.String()+"\nclient_name=unknown\nreverse_client_name=unknown\n"+
			"helo_name="+helo+"\nsender="+sender+"\nrecipient=user"+strconv.Itoa(r)+"@domino.test\n"+
			"recipient_count=0\nsize=0\nqueue_id=\ninstance="+instance+"\n\n")
	}
	return out
}

func benchPolicyConn(ctx context.Context, network, address string, n int, load policyLoad) benchReport {
	rep := benchReport{outcomes: map[string]int{}, lat: make(latencies, 0, n)}
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		rep.errors = n
		return rep
	}
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	var pending []string
	for rep.n+rep.errors < n && ctx.Err() == nil {
		if len(pending) == 0 {
			pending = load.message()
		}
		req := pending[0]
		pending = pending[1:]
		t0 := time.Now()
		w.WriteString(req)
		if err := w.Flush(); err != nil {
			rep.errors++
			return rep
		}
		action, err := readPolicyReply(r)
		if err != nil {
			rep.errors++
			return rep
		}
		rep.lat = append(rep.lat, time.Since(t0))
		rep.n++
		rep.outcomes[outcomeKey(action)]++
	}
	return rep
}

// readPolicyReply reads "action=...\n\n" and returns the action.
func readPolicyReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if _, err := r.ReadString('\n'); err != nil {
		return "", err
	}
	action, _ := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	return action, nil
}
