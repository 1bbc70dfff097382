package metrics

import (
	"sort"
	"strconv"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// NamedStat is one statistic under its Domino-style name.
type NamedStat struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Named returns the statistics under Domino's names first
// ("SMTP.DNSBL.zen.spamhaus.org.TotalHits"), then smtp-interceptor's own
// under SMTPInterceptor, as the stats command prints them and the web
// console shows them. expand adds the hits per site per client IP.
func (st *Stats) Named(expand bool) []NamedStat {
	var out []NamedStat
	p := func(name string, v uint64) { out = append(out, NamedStat{name, strconv.FormatUint(v, 10)}) }
	p("SMTP.PrivateWL.TotalHits", st.WhitelistHits)
	p("SMTP.PrivateBL.TotalHits", st.PrivateBlacklistHits)
	for _, kind := range []rules.ListKind{rules.DNSBL, rules.DNSWL} {
		total := st.DNSBLHits
		if kind == rules.DNSWL {
			total = st.DNSWLHits
		}
		p("SMTP."+string(kind)+".TotalHits", total)
		for _, s := range st.Sites {
			if s.Kind == kind {
				p("SMTP."+string(kind)+"."+s.Site+".TotalHits", s.Hits)
			}
		}
		if expand {
			for _, x := range st.Expanded {
				if x.Kind == kind {
					p("SMTP."+string(kind)+"."+x.Site+"."+x.IP+".Hits", x.Hits)
				}
			}
		}
	}
	p("SMTPInterceptor.Blacklist.TotalHits", st.BlacklistHits)
	for _, s := range st.Sites {
		p("SMTPInterceptor."+string(s.Kind)+"."+s.Site+".Lookups", s.Queries)
		p("SMTPInterceptor."+string(s.Kind)+"."+s.Site+".Errors", s.Errors)
	}
	for _, z := range st.Suspended {
		out = append(out, NamedStat{"SMTPInterceptor.DNSList." + z + ".Suspended", "1"})
	}
	// By stage and action, all controls together (the control is in the
	// Prometheus metric and the JSON).
	var order []string
	sums := map[string]uint64{}
	for _, v := range st.Verdicts {
		name := "SMTPInterceptor.Verdicts." + v.Stage.String() + "." + v.Action.String()
		if v.Mode == "shadow" {
			name += ".shadow"
		}
		if _, ok := sums[name]; !ok {
			order = append(order, name)
		}
		sums[name] += v.Count
	}
	for _, name := range order {
		p(name, sums[name])
	}
	names := make([]string, 0, len(st.Controls))
	for name := range st.Controls {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p("SMTPInterceptor.Control."+name+".Matches", st.Controls[name])
	}
	if d := st.Directory; d != nil {
		// Domino has no statistic for this: it verifies recipients after
		// the relay accepted them.
		up := uint64(0)
		if d.Up {
			up = 1
		}
		p("SMTPInterceptor.Directory.Up", up)
		for _, r := range []rules.DirectoryResult{rules.DirectoryFound, rules.DirectoryUnknown, rules.DirectoryAmbiguous,
			rules.DirectoryGroup, rules.DirectoryError, rules.DirectoryCached} {
			p("SMTPInterceptor.Directory.Lookups."+string(r), d.Lookups[string(r)])
		}
	}
	if n := st.DNSBLScore.Count; n > 0 {
		// [dns_blacklist] decision = "score": how many clients were
		// scored, and their total (the histogram is in the metrics).
		p("SMTPInterceptor.DNSBL.Score.Count", n)
		out = append(out, NamedStat{"SMTPInterceptor.DNSBL.Score.Sum", strconv.FormatFloat(st.DNSBLScore.Sum, 'f', 0, 64)})
	}
	p("SMTPInterceptor.Greylist.Delayed", st.State.GreylistDelayed)
	p("SMTPInterceptor.Greylist.Passed", st.State.GreylistPassed)
	p("SMTPInterceptor.ConfigReloads.ok", st.ConfigReloads["ok"])
	p("SMTPInterceptor.ConfigReloads.error", st.ConfigReloads["error"])
	return out
}
