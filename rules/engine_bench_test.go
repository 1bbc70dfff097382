package rules

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkSession runs whole sessions (connect, EHLO, MAIL, three RCPT,
// DATA) against a private blacklist and a blacklist of n entries each (a
// mix of v4 and v6 CIDRs, ranges, wildcards and names), with HELO, sender
// and recipient controls on. Clients rotate over hits and misses.
func BenchmarkSession(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			cfg, err := Parse("", `
[private_blacklist]
enabled = true
action = "tag"
[helo]
reject_empty = true
deny = ["*.dynamic.example", "localhost"]
[mail_from]
deny = ["@spam.example", "bad@example.org"]
[recipients]
max = 50
deny = ["nobody@domino.example"]
[commands]
deny = ["VRFY", "ETRN"]
`)
			if err != nil {
				b.Fatal(err)
			}
			entries := benchHostEntries(n)
			hl, errs := NewHostList(entries)
			if len(errs) > 0 {
				b.Fatal(errs[0])
			}
			cfg.PrivateBlacklist.Hosts = hl
			cfg.Blacklist.Hosts = hl
			clients := benchHostClients(entries, 1024)
			e := NewEngine(cfg, EngineOptions{})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			refused := 0
			for i := 0; b.Loop(); i++ {
				c := clients[i%len(clients)]
				s := NewSession(c.ip, c.name)
				e.Connect(ctx, s)
				e.Helo(ctx, s, "EHLO", "mail.example.com")
				e.Mail(ctx, s, "sender@example.com")
				e.Rcpt(ctx, s, "a@domino.example")
				e.Rcpt(ctx, s, "b@domino.example")
				if v := e.Rcpt(ctx, s, "c@domino.example"); v.Action.Refuses() {
					refused++
				}
				e.Data(ctx, s)
			}
			b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
		})
	}
}
