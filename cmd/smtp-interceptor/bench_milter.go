package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	gomilter "github.com/d--j/go-milter"
)

// runBenchMilter drives any milter with whole SMTP transactions, each on
// a new milter connection as Postfix opens one per SMTP session, and
// reports transactions/s, latency and the outcome counts.
func runBenchMilter(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench milter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:10061", "milter `address`: host:port or unix:/path")
	conns := fs.Int("c", 16, "concurrent `connections`")
	n := fs.Int("n", 20_000, "total `transactions`")
	hit := fs.Float64("hit", 0.1, "`share` of clients taken from --hit-cidr (meant to be blacklisted)")
	hitCIDR := fs.String("hit-cidr", "203.0.113.0/24", "`CIDR` of the clients that hit the blacklists")
	seed := fs.Uint64("seed", 1, "random `seed`")
	clients := fs.Int("clients", 0, "draw the other clients from this `many` addresses (0: any of 198.18.0.0/15)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	hitPfx, err := netip.ParsePrefix(*hitCIDR)
	if err != nil || !hitPfx.Addr().Is4() {
		fmt.Fprintf(stderr, "bench milter: --hit-cidr %q is not an IPv4 CIDR\n", *hitCIDR)
		return exitUsage
	}
	if *conns < 1 || *n < *conns || *hit < 0 || *hit > 1 {
		fmt.Fprintln(stderr, "bench milter: need -c >= 1, -n >= -c and 0 <= --hit <= 1")
		return exitUsage
	}
	network, address := "tcp", *addr
	if p, ok := strings.CutPrefix(*addr, "unix:"); ok {
		network, address = "unix", p
	}
	client := gomilter.NewClient(network, address,
		gomilter.WithActions(gomilter.AllClientSupportedActionMasks),
		gomilter.WithReadTimeout(30*time.Second), gomilter.WithWriteTimeout(30*time.Second))

	per := *n / *conns
	results := make([]benchReport, *conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *conns {
		wg.Go(func() {
			load := policyLoad{rng: rand.New(rand.NewPCG(*seed, uint64(i))), hit: *hit, hitPfx: hitPfx, conn: i, clients: *clients}
			rep := benchReport{outcomes: map[string]int{}, lat: make(latencies, 0, per)}
			for range per {
				if ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				outcome, err := milterTransaction(client, &load)
				if err != nil {
					rep.errors++
					rep.outcomes["error: "+firstWords(err.Error(), 6)]++
					continue
				}
				rep.lat = append(rep.lat, time.Since(t0))
				rep.n++
				rep.outcomes[outcome]++
			}
			results[i] = rep
		})
	}
	wg.Wait()
	total := benchReport{unit: "transactions", elapsed: time.Since(start), outcomes: map[string]int{}}
	for _, r := range results {
		total.n += r.n
		total.errors += r.errors
		total.lat = append(total.lat, r.lat...)
		for k, v := range r.outcomes {
			total.outcomes[k] += v
		}
	}
	fmt.Fprintf(stdout, "bench milter %s: %d connections\n", *addr, *conns)
	total.print(stdout)
	if total.n == 0 {
		return exitFail
	}
	return exitOK
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
	}
	return strings.Join(f, " ")
}

// milterTransaction runs one SMTP session through the milter: connect,
// HELO, MAIL, three RCPT, DATA, headers, end of message. It returns the
// outcome: the first refusal's code, or "accept" with the number of
// headers added.
func milterTransaction(c *gomilter.Client, load *policyLoad) (string, error) {
	reqs := load.message() // reuse the policy load's client, sender and HELO
	attrs := parseAttrs(reqs[0])
	macros := gomilter.NewMacroBag()
	macros.Set("{client_addr}", attrs["client_address"])
	macros.Set("{client_name}", "unknown")
	macros.Set("i", "BENCH"+strconv.Itoa(load.msg))
	s, err := c.Session(macros)
	if err != nil {
		return "", err
	}
	defer s.Close()
	fam := gomilter.FamilyInet
	if strings.Contains(attrs["client_address"], ":") {
		fam = gomilter.FamilyInet6
	}
	refused := func(act *gomilter.Action, err error) (string, bool, error) {
		if err != nil {
			return "", true, err
		}
		if act.StopProcessing() {
			return firstWords(act.SMTPReply, 2), true, nil
		}
		return "", false, nil
	}
	if out, stop, err := refused(s.Conn("unknown", fam, 25, attrs["client_address"])); stop {
		return out, err
	}
	if out, stop, err := refused(s.Helo(attrs["helo_name"])); stop {
		return out, err
	}
	if out, stop, err := refused(s.Mail("<"+attrs["sender"]+">", "")); stop {
		return out, err
	}
	for r := range 3 {
		if out, stop, err := refused(s.Rcpt("<user"+strconv.Itoa(r)+"@domino.test>", "")); stop {
			return out, err
		}
	}
	if out, stop, err := refused(s.DataStart()); stop {
		return out, err
	}
	for _, h := range [][2]string{{"From", "<" + attrs["sender"] + ">"}, {"To", "<user0@domino.test>"}, {"Subject", "bench"}, {"Message-Id", "<" + strconv.Itoa(load.msg) + "@bench>"}} {
		if out, stop, err := refused(s.HeaderField(h[0], h[1], nil)); stop {
			return out, err
		}
	}
	if out, stop, err := refused(s.HeaderEnd()); stop {
		return out, err
	}
	mods, act, err := s.BodyReadFrom(strings.NewReader("bench\r\n"))
	if out, stop, err := refused(act, err); stop {
		return out, err
	}
	if len(mods) > 0 {
		return "accept +" + strconv.Itoa(len(mods)) + " changes", nil
	}
	return "accept", nil
}

// parseAttrs reads a policy request's name=value lines.
func parseAttrs(req string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(req, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	return out
}
