package main

import (
	"context"
	"io"
	"strconv"
	"strings"
	"time"

	gomilter "github.com/d--j/go-milter"
)

// runBenchMilter drives any milter with whole SMTP transactions, each on
// a new milter connection as Postfix opens one per SMTP session, and
// reports transactions/s, latency and the outcome counts.
func runBenchMilter(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newLoadFlags("bench milter", "127.0.0.1:10061", "transactions", 20_000)
	if code, done := f.parse(args, stdout, stderr); done {
		return code
	}

	client := gomilter.NewClient(f.network, f.address,
		gomilter.WithActions(gomilter.AllClientSupportedActionMasks),
		gomilter.WithReadTimeout(30*time.Second), gomilter.WithWriteTimeout(30*time.Second))

	return f.drive(stdout, "transactions", func(i, per int) benchReport {
		load := f.load(i)
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
		return rep
	})
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
		if out, stop, err := refused(s.Rcpt("<"+load.recipient(r)+">", "")); stop {
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
