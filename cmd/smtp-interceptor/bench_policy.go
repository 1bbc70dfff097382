package main

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// runBenchPolicy drives a policy server (any: this one, postfwd, ...) with
// realistic requests from several persistent connections, as Postfix's
// smtpd processes do, and reports throughput, latency and the actions.
func runBenchPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newLoadFlags("bench policy", "127.0.0.1:10060", "requests", 100_000)
	if code, done := f.parse(args, stdout, stderr); done {
		return code
	}
	return f.drive(stdout, "requests", func(i, per int) benchReport {
		return benchPolicyConn(ctx, f.network, f.address, per, f.load(i))
	})
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
	// rcpts is the size of the recipient pool (user1..userN); 0: the k-th
	// recipient of a message is user(k-1).
	rcpts      int
	rcptDomain string // "@domino.test"
}

// recipient returns the address of a message's r-th recipient.
func (l *policyLoad) recipient(r int) string {
	if l.rcpts > 0 {
		r = 1 + l.rng.IntN(l.rcpts)
	}
	return "user" + strconv.Itoa(r) + l.rcptDomain
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
			"helo_name="+helo+"\nsender="+sender+"\nrecipient="+l.recipient(r)+"\n"+
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
