package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

const benchUsage = `usage: smtp-interceptor bench policy|milter --addr A [--conns CONNS] [-n COUNT] [--hit SHARE] [--hit-cidr CIDR] [--clients N] [--rcpts N] [--rcpt-domain D] [--seed S]
       smtp-interceptor bench null-policy|null-milter --listen A

policy and milter load a server: it decides, logs and counts every request
as real traffic. "smtp-interceptor bench policy -h" lists the flags.
`

// runBench dispatches the load generators.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return exitOK
	case "policy":
		return runBenchPolicy(ctx, args[1:], stdout, stderr)
	case "milter":
		return runBenchMilter(ctx, args[1:], stdout, stderr)
	case "null-policy", "null-milter":
		return runBenchNull(ctx, args[0], args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "bench: unknown target %q (want policy, milter, null-policy or null-milter)\n\n%s", args[0], benchUsage)
	return exitUsage
}

// latencies summarizes request latencies.
type latencies []time.Duration

func (l latencies) percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(float64(len(l)-1) * p)
	return l[i]
}

// benchReport is what a bench run prints.
type benchReport struct {
	unit     string // "requests" or "transactions"
	n        int
	errors   int
	elapsed  time.Duration
	lat      latencies
	outcomes map[string]int
}

func (r *benchReport) print(w io.Writer) {
	slices.Sort(r.lat)
	rate := float64(r.n) / r.elapsed.Seconds()
	fmt.Fprintf(w, "%d %s in %.2fs: %.0f %s/s\n", r.n, r.unit, r.elapsed.Seconds(), rate, r.unit)
	fmt.Fprintf(w, "latency p50 %s  p99 %s  max %s\n", round(r.lat.percentile(0.50)), round(r.lat.percentile(0.99)), round(r.lat.percentile(1)))
	keys := make([]string, 0, len(r.outcomes))
	for k := range r.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-40s %d\n", k, r.outcomes[k])
	}
	if r.errors > 0 {
		fmt.Fprintf(w, "  %-40s %d\n", "errors", r.errors)
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// outcomeKey groups replies: "550 5.7.1", "PREPEND X-DNSBL-Site:",
// "DUNNO"; the text after the codes (which may name the client) is left
// out.
func outcomeKey(action string) string {
	f := strings.Fields(action)
	switch {
	case len(f) == 0:
		return "(empty)"
	case len(f) >= 2 && (f[0][0] >= '2' && f[0][0] <= '5' || strings.EqualFold(f[0], "PREPEND")):
		return f[0] + " " + f[1]
	}
	return f[0]
}

// loadFlags are the flags every load generator takes.
type loadFlags struct {
	name              string
	fs                *flag.FlagSet
	addr              *string
	conns, n, clients *int
	rcpts             *int
	rcptDomain        *string
	hit               *float64
	hitCIDR           *string
	seed              *uint64
	network, address  string // from addr
	hitPfx            netip.Prefix
}

// newLoadFlags declares the common flags; unit names what -n counts.
func newLoadFlags(name, defAddr, unit string, defN int) *loadFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &loadFlags{
		name:       name,
		fs:         fs,
		addr:       fs.String("addr", defAddr, "server `address`: host:port or unix:/path"),
		conns:      fs.Int("conns", 16, "concurrent `connections`"),
		n:          fs.Int("n", defN, "total `"+unit+"`"),
		hit:        fs.Float64("hit", 0.1, "`share` of clients taken from --hit-cidr (meant to be blacklisted)"),
		hitCIDR:    fs.String("hit-cidr", "203.0.113.0/24", "`CIDR` of the clients that hit the blacklists"),
		seed:       fs.Uint64("seed", 1, "random `seed`"),
		clients:    fs.Int("clients", 0, "draw the other clients from this `many` addresses (0: any of 198.18.0.0/15), e.g. to measure DNS cache hits"),
		rcpts:      fs.Int("rcpts", 0, "draw each recipient from user1..userN@--rcpt-domain for this `N` (0: the message's k-th recipient is user(k-1)@), e.g. to measure [recipients] verify against a directory of N people"),
		rcptDomain: fs.String("rcpt-domain", "domino.test", "the recipients' `domain`"),
	}
}

// parse parses and checks the flags, and warns that the load counts as
// traffic. done says the command is over (help, or bad usage reported),
// with code its exit code.
func (l *loadFlags) parse(args []string, stdout, stderr io.Writer) (code int, done bool) {
	synopsis := "smtp-interceptor " + l.name + " [--addr A] [--conns CONNS] [-n COUNT] [--hit SHARE] [--hit-cidr CIDR] [--clients N] [--rcpts N] [--rcpt-domain D] [--seed S]"
	if code, done := parseFlags(l.fs, synopsis, args, stdout, stderr); done {
		if code == exitUsage && slices.ContainsFunc(args, isFlagC) {
			fmt.Fprintf(stderr, "%s: the connection count is --conns (-c was renamed)\n", l.name)
		}
		return code, true
	}
	if l.fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", l.name, l.fs.Arg(0))
		return exitUsage, true
	}
	var err error
	l.hitPfx, err = netip.ParsePrefix(*l.hitCIDR)
	switch {
	case err != nil || !l.hitPfx.Addr().Is4():
		fmt.Fprintf(stderr, "%s: --hit-cidr %q is not an IPv4 CIDR\n", l.name, *l.hitCIDR)
		return exitUsage, true
	case *l.clients < 0 || *l.clients > 1<<17:
		fmt.Fprintf(stderr, "%s: --clients must be between 0 and 131072\n", l.name)
		return exitUsage, true
	case *l.rcpts < 0:
		fmt.Fprintf(stderr, "%s: --rcpts must be 0 or more\n", l.name)
		return exitUsage, true
	case *l.rcptDomain == "" || strings.ContainsAny(*l.rcptDomain, "@ \n"):
		fmt.Fprintf(stderr, "%s: --rcpt-domain %q is not a domain\n", l.name, *l.rcptDomain)
		return exitUsage, true
	case *l.conns < 1 || *l.n < *l.conns || *l.hit < 0 || *l.hit > 1:
		fmt.Fprintf(stderr, "%s: need --conns >= 1, -n >= --conns and 0 <= --hit <= 1\n", l.name)
		return exitUsage, true
	}
	l.network, l.address = "tcp", *l.addr
	if p, ok := strings.CutPrefix(*l.addr, "unix:"); ok {
		l.network, l.address = "unix", p
	}
	fmt.Fprintf(stderr, "%s: warning: %s decides, logs and counts this load as real traffic: its session and fail2ban logs, statistics and metrics will hold it (and fail2ban may ban --hit-cidr). Do not point bench at a production server.\n",
		l.name, *l.addr)
	return 0, false
}

// isFlagC reports whether arg is the flag -c (-c, --c, -c=N).
func isFlagC(arg string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return strings.HasPrefix(arg, "-") && name == "c"
}

// load returns connection i's request generator.
func (l *loadFlags) load(i int) policyLoad {
	return policyLoad{rng: rand.New(rand.NewPCG(*l.seed, uint64(i))), hit: *l.hit, hitPfx: l.hitPfx, conn: i, clients: *l.clients,
		rcpts: *l.rcpts, rcptDomain: "@" + *l.rcptDomain}
}

// drive runs conn on every connection at once, each for its share of -n,
// and reports the merged result as unit; it returns the exit code.
func (l *loadFlags) drive(w io.Writer, unit string, conn func(i, per int) benchReport) int {
	per := *l.n / *l.conns
	results := make([]benchReport, *l.conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *l.conns {
		wg.Go(func() { results[i] = conn(i, per) })
	}
	wg.Wait()
	return l.report(w, unit, time.Since(start), results)
}

// report merges the connections' reports, prints the total and returns the
// exit code: failure when nothing got through.
func (l *loadFlags) report(w io.Writer, unit string, elapsed time.Duration, results []benchReport) int {
	total := benchReport{unit: unit, elapsed: elapsed, outcomes: map[string]int{}}
	for _, r := range results {
		total.n += r.n
		total.errors += r.errors
		total.lat = append(total.lat, r.lat...)
		for k, v := range r.outcomes {
			total.outcomes[k] += v
		}
	}
	fmt.Fprintf(w, "%s %s: %d connections\n", l.name, *l.addr, *l.conns)
	total.print(w)
	if total.n == 0 {
		return exitFail
	}
	return exitOK
}
