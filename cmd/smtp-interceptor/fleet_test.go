package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// fleetConfig is [state] on a Redis at addr, with [autoban] and one rate
// limit of 3 messages per client per hour.
func fleetConfig(addr, relay string) string {
	return fmt.Sprintf(`[state]
backend = "redis"
addrs = [%q]
relay = %q
timeout = "200ms"
[autoban]
enabled = true
refusals = 3
within = "10m"
ban_for = "1h"
[[ratelimit]]
name = "per-client"
key = "client"
count = "messages"
limit = 3
per = "1h"
[recipients]
deny = ["blocked@domino.test"]
`, addr, relay)
}

// TestFleetOnTheServer: two servers sharing one Redis (miniredis). The
// policy requests are those of e2e "fleet-*" (real Postfix in front of
// each relay): a ban made elsewhere is in force within a second; three
// refusals on one relay ban the client on the other; a rate limit is
// counted across both; with Redis gone, good mail flows and known bans
// still hold.
func TestFleetOnTheServer(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	a := startLive(t, fleetConfig(mr.Addr(), "relay-a"))
	b := startLive(t, fleetConfig(mr.Addr(), "relay-b"))
	pa, pb := a.dial(t), b.dial(t)
	is.Equal(pb.rcpt("192.0.2.10", "mx.example.com", "b.1", "x@domino.test"), "DUNNO")

	// A ban made by a third party (the ban command, the admin API of
	// another relay) reaches both.
	admin, err := state.OpenRedis(state.RedisOptions{Addrs: []string{mr.Addr()}, Relay: "admin", Timeout: 200 * time.Millisecond,
		Logger: testutil.Logger(t)})
	is.NoErr(err)
	defer admin.Close()
	waitFor(t, "the admin client connected", admin.Up)
	is.NoErr(admin.AddBan(context.Background(), state.Ban{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Reason: "test", Creator: "admin@test", Created: time.Now()}))
	waitFor(t, "the ban on relay b", func() bool {
		return strings.HasPrefix(pb.rcpt("192.0.2.10", "mx.example.com", fmt.Sprintf("b.%d", time.Now().UnixNano()), "x@domino.test"), "550 5.7.1 Your host 192.0.2.10 is banned")
	})

	// Three refusals through relay a ban the client on relay b.
	for i := range 3 {
		reply := pa.rcpt("192.0.2.20", "mx.example.com", fmt.Sprintf("a.%d", i), "blocked@domino.test")
		is.True(strings.HasPrefix(reply, "550 5.7.1")) // refused on relay a
	}
	waitFor(t, "the automatic ban on relay b", func() bool {
		return strings.HasPrefix(pb.rcpt("192.0.2.20", "mx.example.com", fmt.Sprintf("b.%d", time.Now().UnixNano()), "x@domino.test"), "550 5.7.1 Your host 192.0.2.20 is banned")
	})
	waitFor(t, "the automatic ban in relay a's log", func() bool {
		return strings.Contains(a.stderr.String(), `msg="client banned automatically" prefix=192.0.2.20/32`)
	})

	// A client's fourth message, whichever relay, is tempfailed.
	msg := func(p *policyClient, id string) string {
		return p.c.ask(fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.30\nclient_name=unknown\nhelo_name=mx.example.com\nsender=bulk@example.com\nrecipient=x@domino.test\ninstance=%s\n\n", id))
	}
	is.Equal(msg(pa, "r.1"), "DUNNO")
	is.Equal(msg(pb, "r.2"), "DUNNO")
	is.Equal(msg(pa, "r.3"), "DUNNO")
	is.Equal(msg(pb, "r.4"), "450 4.7.1 Rate limit exceeded, try again later")

	// Redis goes away: no good message is refused, known bans hold.
	mr.Close()
	is.Equal(pa.rcpt("192.0.2.40", "mx.example.com", "d.1", "x@domino.test"), "DUNNO")
	is.Equal(msg(pb, "d.2"), "DUNNO") // the rate limit fails open
	is.True(strings.HasPrefix(pb.rcpt("192.0.2.10", "mx.example.com", "d.3", "x@domino.test"), "550 5.7.1 Your host 192.0.2.10 is banned"))
	waitFor(t, "the warning", func() bool { return strings.Contains(b.stderr.String(), `msg="state backend unreachable"`) })
	m := httpGet(t, "http://"+b.metricsAddr(t)+"/metrics")
	is.True(strings.Contains(m, "smtp_interceptor_state_backend_up 0"))
	is.True(strings.Contains(m, "smtp_interceptor_bans 2"))
}

// TestGreylistOnTheServer: through the policy server, the first attempt
// of a triplet is tempfailed and the retry after delay passes with the
// X-Greylist header (PREPEND), as e2e "greylist-*" shows real Postfix
// doing; a retry through the other relay of the fleet passes too.
func TestGreylistOnTheServer(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	grey := "[greylist]\nenabled = true\ndelay = \"1s\"\nauto_whitelist_after = 0\n"
	a := startLive(t, strings.Replace(fleetConfig(mr.Addr(), "relay-a"), "[autoban]", grey+"[autoban]", 1))
	b := startLive(t, strings.Replace(fleetConfig(mr.Addr(), "relay-b"), "[autoban]", grey+"[autoban]", 1))
	pa, pb := a.dial(t), b.dial(t)
	ask := func(p *policyClient, ip, id string) string {
		return p.c.ask(fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=%s\nclient_name=unknown\nhelo_name=mx.example.com\nsender=grey@example.com\nrecipient=x@domino.test\ninstance=%s\n\n", ip, id))
	}
	is.Equal(ask(pa, "203.0.113.50", "g.1"), "450 4.7.1 Greylisted, try again in 1 seconds")
	is.Equal(ask(pb, "198.51.100.50", "g.2"), "450 4.7.1 Greylisted, try again in 1 seconds")
	seenOnB := time.Now()
	var reply string
	n := 0
	waitFor(t, "the retry after the delay", func() bool {
		n++ // another address of the same /24 each time: fleetConfig's rate limit counts per client
		reply = ask(pa, fmt.Sprintf("203.0.113.%d", 50+n%200), fmt.Sprintf("g.%d", n))
		return !strings.HasPrefix(reply, "450 4.7.1 Greylisted")
	})
	is.True(strings.HasPrefix(reply, "PREPEND X-Greylist: delayed ")) // the first pass says how long it waited
	is.True(strings.HasSuffix(reply, " seconds by smtp-interceptor"))
	// The triplet relay-b saw first passes through relay-a.
	// Once its delay is over, the first retry through relay-a passes: a
	// knows the triplet from Redis (on its own it would be a first
	// attempt, 450).
	waitFor(t, "relay-b's delay to pass", func() bool { return time.Since(seenOnB) > 1100*time.Millisecond })
	is.True(strings.HasPrefix(ask(pa, "198.51.100.60", "h.1"), "PREPEND X-Greylist: delayed "))
	m := httpGet(t, "http://"+a.metricsAddr(t)+"/metrics")
	is.True(strings.Contains(m, "smtp_interceptor_greylist_passed_total 2"))
	is.True(strings.Contains(m, "smtp_interceptor_greylist_triplets 2"))
}
