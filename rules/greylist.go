package rules

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Greylister stores greylisting's triplets: the state backend, which cmd
// adapts. Errors let the recipient through (greylisting fails open).
type Greylister interface {
	// Greylist records an attempt of the triplet key and says whether it
	// may pass (see state.Backend.Greylist).
	Greylist(ctx context.Context, key string, delay, retry, keep time.Duration) (GreyAnswer, error)
	// GreylistPassed adds add (0: only reads) to the count of triplets of
	// a client network that passed within keep, and returns it.
	GreylistPassed(ctx context.Context, network string, add int, keep time.Duration) (int, error)
}

// GreyAnswer is a Greylister's answer for one attempt.
type GreyAnswer struct {
	Pass, New, FirstPass bool
	// Wait is how long until a retry may pass; Delayed how long the
	// triplet waited before it first passed.
	Wait, Delayed time.Duration
}

// GreylistConfig is the [greylist] section.
type GreylistConfig struct {
	Enabled                  bool
	Delay, RetryWindow, Keep time.Duration
	NetV4, NetV6             int
	AutoWhitelistAfter       int
	// Listed is apply_to = "listed": only clients a list marked with the
	// greylist action are greylisted.
	Listed bool `key:"apply_to"`
}

func (b *builder) compileGreylist(raw *rawConfig, cfg *Config) {
	g := raw.Greylist
	gc := GreylistConfig{Enabled: g.Enabled, NetV4: g.NetV4, NetV6: g.NetV6, AutoWhitelistAfter: g.AutoWhitelistAfter,
		Delay: b.duration("greylist.delay", g.Delay), RetryWindow: b.duration("greylist.retry_window", g.RetryWindow),
		Keep: b.duration("greylist.keep", g.Keep)}
	if gc.Delay > 0 && gc.RetryWindow > 0 && gc.RetryWindow <= gc.Delay {
		b.errorf("greylist.retry_window", "%s is not longer than delay %s: no retry could ever pass", gc.RetryWindow, gc.Delay)
	}
	if g.NetV4 < 8 || g.NetV4 > 32 {
		b.errorf("greylist.net_v4", "must be between 8 and 32, not %d", g.NetV4)
	}
	if g.NetV6 < 16 || g.NetV6 > 128 {
		b.errorf("greylist.net_v6", "must be between 16 and 128, not %d", g.NetV6)
	}
	if g.AutoWhitelistAfter < 0 {
		b.errorf("greylist.auto_whitelist_after", "must be 0 (off) or more, not %d", g.AutoWhitelistAfter)
	}
	switch g.ApplyTo {
	case "all":
	case "listed":
		gc.Listed = true
	default:
		b.errorf("greylist.apply_to", "unknown value %q: want all or listed", g.ApplyTo)
	}
	for _, l := range []struct {
		key    string
		action ListAction
	}{{"private_blacklist.action", cfg.PrivateBlacklist.Action}, {"dns_blacklist.action", cfg.DNSBlacklist.Action}} {
		if l.action != ListGreylist {
			continue
		}
		switch {
		case !g.Enabled:
			b.errorf(l.key, "greylist needs [greylist] enabled = true")
		case !gc.Listed:
			b.warns = append(b.warns, l.key+" = \"greylist\" changes nothing while [greylist] apply_to = \"all\": every client is greylisted")
		}
	}
	cfg.Greylist = gc
}

// greylist applies [greylist] to a recipient the other recipient
// controls accepted: the first attempt of a triplet (client network,
// sender, recipient) gets 450 4.7.1 and must come back after delay; a
// client network that passed auto_whitelist_after times is not
// greylisted. Whitelisted and authenticated sessions are exempt (gate and
// here), and a backend that fails lets the recipient through. It reports
// whether it tempfailed the recipient.
func (e *Engine) greylist(ctx context.Context, cfg *Config, s *Session, rcpt string, v *Verdict) bool {
	g := &cfg.Greylist
	if !g.Enabled || s.connect.Whitelisted {
		return false
	}
	if g.Listed && !s.connect.Greylist {
		if s.Trace {
			v.trace(s, ControlGreylist, "skipped", "apply_to = listed and no list marked the client")
		}
		return false
	}
	gl := e.state.Load().grey
	if gl == nil {
		return false
	}
	network := greyNetwork(s.ClientIP, g)
	key := network + "|" + NormalizeSender(s.MailFrom) + "|" + strings.ToLower(bareAddress(rcpt))
	ans, err := gl.Greylist(ctx, key, g.Delay, g.RetryWindow, g.Keep)
	if err != nil {
		e.counters.greylistError()
		if s.Trace {
			v.trace(s, ControlGreylist, "error", err.Error()+"; let through")
		}
		return false
	}
	if ans.Pass {
		if ans.FirstPass {
			e.counters.greylistPassed()
			if g.AutoWhitelistAfter > 0 {
				_, _ = gl.GreylistPassed(ctx, network, 1, g.Keep)
			}
		}
		if ans.FirstPass && ans.Delayed > 0 && s.greyHeader == "" {
			// The message that waited says how long (postgrey's header);
			// later ones of a triplet that passed before do not.
			s.greyHeader = "delayed " + strconv.Itoa(int(ans.Delayed.Round(time.Second)/time.Second)) + " seconds by smtp-interceptor"
		}
		if s.Trace {
			v.trace(s, ControlGreylist, "pass", "triplet "+strconv.Quote(key)+" passed")
		}
		return false
	}
	if g.AutoWhitelistAfter > 0 {
		if n, err := gl.GreylistPassed(ctx, network, 0, g.Keep); err == nil && n >= g.AutoWhitelistAfter {
			if s.Trace {
				v.trace(s, ControlGreylist, "pass", network+" passed "+strconv.Itoa(n)+" times: auto-whitelisted")
			}
			return false
		}
	}
	e.counters.control(ControlGreylist)
	e.counters.greylistDelayed()
	wait := int((ans.Wait + time.Second - 1) / time.Second)
	reason := "triplet " + strconv.Quote(key) + " greylisted for " + strconv.Itoa(wait) + " seconds more"
	v.refuse(ActionTempfail, 450, "4.7.1", "Greylisted, try again in "+strconv.Itoa(wait)+" seconds", ControlGreylist, reason)
	v.trace(s, ControlGreylist, "tempfail", reason)
	return true
}

// greyNetwork is the client's network as greylisting counts it.
func greyNetwork(ip netip.Addr, g *GreylistConfig) string {
	return ClientNetwork(ip, g.NetV4, g.NetV6).String()
}

// ClientNetwork is the network of ip that greylisting, automatic bans
// and client_net rate limits count by: its first v4 bits for IPv4 (an
// IPv4-mapped address counts as IPv4), v6 for IPv6.
func ClientNetwork(ip netip.Addr, v4, v6 int) netip.Prefix {
	ip = ip.Unmap()
	bits := v6
	if ip.Is4() {
		bits = v4
	}
	p, _ := ip.Prefix(bits)
	return p
}

// NormalizeSender is the sender as greylisting's triplets know it, as
// postgrey normalises it: lower case, the BATV tag removed
// (prvs=TAG=local@domain), an SRS address turned back into the original
// (SRS0=HASH=TT=domain=local@forwarder), an address extension (+tag)
// removed, and every run of digits in the local part made one "#" (VERP
// senders that number each message). The null sender is "".
func NormalizeSender(from string) string {
	a := strings.ToLower(bareAddress(from))
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return a
	}
	local, domain := a[:at], a[at+1:]
	// BATV: prvs=tag=local, btv1==tag==local.
	for _, p := range []string{"prvs=", "msprvs1=", "btv1=="} {
		if rest, ok := strings.CutPrefix(local, p); ok {
			if i := strings.LastIndexByte(rest, '='); i >= 0 {
				local = rest[i+1:]
			}
			break
		}
	}
	// SRS0=HHH=TT=domain=local@fwd; SRS1=HHH=fwd==HHH=TT=domain=local@fwd2.
	if strings.HasPrefix(local, "srs0=") || strings.HasPrefix(local, "srs1=") {
		f := strings.Split(local, "=")
		if len(f) >= 5 {
			local = strings.Join(f[len(f)-1:], "=")
			domain = f[len(f)-2]
		}
	}
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	var b strings.Builder
	digits := false
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c >= '0' && c <= '9' {
			if !digits {
				b.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteByte(c)
	}
	return b.String() + "@" + domain
}
