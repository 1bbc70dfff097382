package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// runCheck validates a configuration, prints a summary of what is enabled
// and every warning, and exits 2 on error (like postfix check / nginx -t).
func runCheck(ctx context.Context, args []string, e env) int {
	stdout, stderr := e.stdout, e.stderr
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file`")
	probe := fs.Bool("probe", false, "probe every DNS list with its RFC 5782 test entries, and bind to [directory] and search for one address")
	probeRcpt := fs.String("probe-rcpt", "", "with --probe: the `address` searched for in [directory] (default postmaster@ its first domain)")
	if code, done := parseFlags(fs, "smtp-interceptor check [-c FILE] [--probe [--probe-rcpt ADDR]]", args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "check: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	path := e.configPath(fs, *given)
	e.noteDefaults("check", path, fs)
	cfg, ok := loadConfig(path, stderr)
	if !ok {
		return exitUsage
	}
	if !checkLogPaths(cfg, stderr) || !checkConsole(cfg, stderr) {
		return exitUsage
	}
	printSummary(stdout, cfg)
	if c := cfg.Server.Candidate; c != "" {
		cand, ok := loadConfig(c, stderr)
		if !ok {
			fmt.Fprintf(stderr, "check: the candidate configuration ([server] candidate) has errors\n")
			return exitUsage
		}
		fmt.Fprintln(stdout, "candidate ([server] candidate):")
		printSummary(stdout, cand)
	}
	if *probe {
		code := probeLists(ctx, cfg, stdout, stderr)
		if c := probeDirectory(ctx, cfg, *probeRcpt, stdout, stderr); c != exitOK {
			code = c
		}
		return code
	}
	if *probeRcpt != "" {
		fmt.Fprintln(stderr, "check: --probe-rcpt needs --probe")
		return exitUsage
	}
	return exitOK
}

// probeLists probes every enabled DNS list (127.0.0.2 must be listed,
// 127.0.0.1 must not) and prints each result. It exits 1 when a list would
// be suspended or cannot be asked.
func probeLists(ctx context.Context, cfg *rules.Config, stdout, stderr io.Writer) int {
	zones := dnsZones(cfg)
	if len(zones) == 0 {
		fmt.Fprintln(stdout, "probe: no DNS list is enabled")
		return exitOK
	}
	client, err := newDNSClient(cfg, new(rules.Counters), nil, nil)
	if err != nil {
		fmt.Fprintf(stderr, "probe: %v\n", err)
		return exitFail
	}
	code := exitOK
	for _, z := range zones {
		r := client.Probe(ctx, z)
		fmt.Fprintf(stdout, "probe: %s\n", r)
		if r.Suspended || r.Err != nil {
			code = exitFail
		}
	}
	return code
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func printSummary(w io.Writer, cfg *rules.Config) {
	src := cfg.Path
	if src == "" {
		src = "built-in defaults"
	}
	fmt.Fprintf(w, "configuration %s: OK\n", src)
	p := func(name, format string, args ...any) {
		fmt.Fprintf(w, "  %-18s %s\n", name, fmt.Sprintf(format, args...))
	}
	s := cfg.Server
	p("policy", "%s (idle_timeout %s)", listOrNone(s.Policy), s.IdleTimeout)
	p("milter", "%s (delay_reject %s, milter_idle_timeout %s)", listOrNone(s.Milter), onOff(s.DelayReject), s.MilterIdleTimeout)
	p("metrics", "%s", orNone(s.Metrics))
	p("allowed clients", "%d entries", s.Allow.Len())
	p("authenticated", "controls %s for SASL-authenticated sessions", map[bool]string{true: "apply", false: "do not apply"}[s.CheckAuthenticated])
	p("whitelist", "%d entries, scope %s, action %s", cfg.Whitelist.Hosts.Len(), cfg.Whitelist.Scope, cfg.Whitelist.Action)
	p("blacklist", "%d entries", cfg.Blacklist.Hosts.Len())
	connAllow := "from any host"
	if n := cfg.Connections.Allow.Len(); n > 0 {
		connAllow = fmt.Sprintf("only from %d allowed entries", n)
	}
	p("connections", "%s, verify_host_name %s", connAllow, onOff(cfg.Connections.VerifyHostName))
	if pb := cfg.PrivateBlacklist; pb.Enabled {
		p("private_blacklist", "on, %d entries, action %s", pb.Hosts.Len(), pb.Action)
	} else {
		p("private_blacklist", "off")
	}
	if d := cfg.DNSWhitelist; d.Enabled {
		p("dns_whitelist", "on, action %s, sites %s", d.Action, siteNames(d.Sites))
	} else {
		p("dns_whitelist", "off")
	}
	if d := cfg.DNSBlacklist; d.Enabled {
		decision := "the first listing decides"
		if d.Score {
			decision = fmt.Sprintf("score: action at %d or above, whitelisted at %d or below (0: off)", d.Threshold, d.AllowThreshold)
		}
		p("dns_blacklist", "on, action %s, sites %s; %s", d.Action, siteNames(d.Sites), decision)
	} else {
		p("dns_blacklist", "off")
	}
	p("helo", "reject_empty %s, %d prohibited names", onOff(cfg.Helo.RejectEmpty), cfg.Helo.Deny.Len())
	p("mail_from", "%d prohibited senders, %s, disconnect %s, verify_domain %s", cfg.MailFrom.Deny.Len(),
		onlyAllowed(cfg.MailFrom.Allow.Len(), "senders"), onOff(cfg.MailFrom.Disconnect), onOff(cfg.MailFrom.VerifyDomain))
	maxR := "no limit"
	if cfg.Recipients.Max > 0 {
		maxR = fmt.Sprintf("at most %d", cfg.Recipients.Max)
	}
	p("recipients", "%s, %d prohibited, %s, verify %s", maxR, cfg.Recipients.Deny.Len(), onlyAllowed(cfg.Recipients.Allow.Len(), "recipients"), onOff(cfg.Recipients.Verify))
	if d := &cfg.Directory; d.Enabled() {
		p("directory", "%s; reject_ambiguous %s, deny_groups %s, on_error %s", d, onOff(cfg.Recipients.RejectAmbiguous),
			onOff(cfg.Recipients.DenyGroups), map[bool]string{true: "accept", false: "tempfail"}[d.OnErrorAccept])
	} else {
		p("directory", "off")
	}
	if n := cfg.Server.ErrorLimit; n > 0 {
		p("error_limit", "421 and the session ends after %d refusals", n)
	} else {
		p("error_limit", "off")
	}
	p("commands", "deny %s; allow %s", setOrNone(cfg.Commands.Deny), setOrNone(cfg.Commands.Allow))
	p("tags", "%s, %s, Authentication-Results %s", cfg.Tags.DNSBLHeader, cfg.Tags.DNSWLHeader, onOff(cfg.Tags.AuthenticationResults))
	if st := cfg.State; st.Backend == "redis" {
		p("state", "redis %s, prefix %q, timeout %s, relay %s", strings.Join(st.Addrs, ", "), st.Prefix, st.Timeout, relayName(cfg))
	} else {
		p("state", "memory, bans kept in %s", orNone(st.File))
	}
	p("admin", "%s", adminSummary(cfg.Admin))
	if cfg.Log.Store != "" {
		p("session store", "%s, kept %s", cfg.Log.Store, cfg.Log.Retention)
	} else {
		p("session store", "off")
	}
	if a := cfg.Autoban; a.Enabled {
		p("autoban", "%d refusals within %s ban for %s (IPv4 /%d, IPv6 /%d)", a.Refusals, a.Within, a.BanFor, a.NetV4, a.NetV6)
	} else {
		p("autoban", "off")
	}
	if g := cfg.Greylist; g.Enabled {
		apply := "all clients"
		if g.Listed {
			apply = "clients a list marked (action greylist)"
		}
		p("greylist", "%s: delay %s, retry window %s, keep %s, networks /%d and /%d, auto-whitelist after %d", apply, g.Delay, g.RetryWindow, g.Keep, g.NetV4, g.NetV6, g.AutoWhitelistAfter)
	} else {
		p("greylist", "off")
	}
	for _, r := range cfg.RateLimits {
		action := "tempfail"
		if r.Reject {
			action = "reject"
		}
		p("ratelimit", "%s: %d %s per %s by %s, %s", r.Name, r.Limit, r.Count, r.Per, r.Key, action)
	}
	if len(cfg.Warnings) == 0 {
		fmt.Fprintln(w, "no warnings")
		return
	}
	fmt.Fprintf(w, "%d warnings:\n", len(cfg.Warnings))
	for _, warn := range cfg.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

// onlyAllowed describes an allow list of n entries.
func onlyAllowed(n int, what string) string {
	if n == 0 {
		return "any " + what
	}
	return fmt.Sprintf("only %s on the allow list (%d entries)", what, n)
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

func setOrNone(m map[string]bool) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, " ")
}

func siteNames(sites []rules.DNSSite) string {
	if len(sites) == 0 {
		return "none"
	}
	names := make([]string, len(sites))
	for i, s := range sites {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// checkLogPaths reports the log files serve could not write to (serve
// itself would start, queue their lines and keep trying to open them).
func checkLogPaths(cfg *rules.Config, stderr io.Writer) bool {
	ok := true
	for _, l := range []struct{ key, path string }{{"log.sessions", cfg.Log.Sessions}, {"log.fail2ban", cfg.Log.Fail2ban}, {"log.store", cfg.Log.Store}} {
		if err := logfile.CheckWritable(l.path); err != nil {
			fmt.Fprintf(stderr, "smtp-interceptor: %s: %v\n", l.key, err)
			ok = false
		}
	}
	return ok
}
