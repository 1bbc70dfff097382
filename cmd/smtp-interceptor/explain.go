package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// runExplain runs one simulated session through the engine and prints every
// stage's decision and why.
func runExplain(ctx context.Context, args []string, e env) int {
	stdout, stderr := e.stdout, e.stderr
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file`")
	ip := fs.String("ip", "", "client IP `address` (required)")
	name := fs.String("name", "", "verified client host `name`")
	ptr := fs.String("ptr", "", "the client's PTR `name` as the MTA found it, verified or not (\"unknown\": none); without it, verify_host_name asks DNS")
	helo := fs.String("helo", "", "EHLO `name`; without it the client sends no HELO/EHLO")
	from := fs.String("from", "", "MAIL FROM `address` (\"<>\" for the null sender)")
	auth := fs.String("auth", "", "SASL login `name`: simulate an authenticated client")
	var rcpts repeated
	fs.Var(&rcpts, "rcpt", "RCPT TO `address` (repeat for several)")
	via := fs.String("via", "policy", "adapter to simulate: `policy` (Postfix asks at RCPT, after AUTH) or milter (connect, HELO, then MAIL FROM after AUTH; delay_reject applies)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if code, done := parseFlags(fs, "smtp-interceptor explain [-c FILE] --ip A [--name H] [--ptr H] [--helo H] [--from S] [--rcpt R]... [--auth USER] [--via policy|milter] [--json]", args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "explain: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *ip == "" {
		fmt.Fprintln(stderr, "explain: --ip is required")
		return exitUsage
	}
	addr, err := netip.ParseAddr(*ip)
	if err != nil {
		fmt.Fprintf(stderr, "explain: --ip %q is not an IP address\n", *ip)
		return exitUsage
	}
	if *via != string(rules.ViaPolicy) && *via != string(rules.ViaMilter) {
		fmt.Fprintf(stderr, "explain: --via %q: want policy or milter\n", *via)
		return exitUsage
	}
	if len(rcpts) > 0 && *from == "" {
		fmt.Fprintln(stderr, "explain: --rcpt needs --from")
		return exitUsage
	}
	path := e.configPath(fs, *given)
	e.noteDefaults("explain", path, fs)
	cfg, ok := loadConfig(path, stderr)
	if !ok {
		return exitUsage
	}

	opts := rules.EngineOptions{Counters: new(rules.Counters)}
	if dnsNeeded(cfg) {
		// Live DNS, as the server would ask it.
		client, err := newDNSClient(cfg, opts.Counters, nil, nil)
		if err != nil {
			fmt.Fprintf(stderr, "explain: %v; DNS lists are skipped\n", err)
		} else {
			opts.DNS = client
		}
	}
	if cfg.Recipients.Verify && len(rcpts) > 0 {
		// The live directory, as the server would ask it.
		dir, err := newDirectoryClient(cfg, nil, nil)
		if err != nil {
			fmt.Fprintf(stderr, "explain: %v\n", err)
			return exitUsage
		}
		defer dir.Close()
		opts.Directory = engineDirectory(dir)
	}
	engine := rules.NewEngine(cfg, opts)
	s := rules.NewSession(addr, *name)
	s.ID = "explain"
	if flagSet(fs, "ptr") {
		s.SetPTR(*ptr)
	}
	tx := rules.Transaction{From: *from, Rcpts: rcpts, AuthUser: *auth, Via: rules.Via(*via)}
	if flagSet(fs, "helo") {
		tx.HeloCmd, tx.Helo = "EHLO", *helo
	}
	x := engine.Explain(ctx, s, tx)

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(x); err != nil {
			fmt.Fprintf(stderr, "explain: %v\n", err)
			return exitFail
		}
		return exitOK
	}
	printExplanation(stdout, s, x, tx.Via, cfg.Server.DelayReject)
	return exitOK
}

// flagSet reports whether a flag was given on the command line (so that
// --helo "" means an empty HELO, and no --helo means none).
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func printExplanation(w io.Writer, s *rules.Session, x rules.Explanation, via rules.Via, delayReject bool) {
	client := s.ClientIP.String()
	if s.ClientName != "" {
		client += " (" + s.ClientName + ")"
	}
	fmt.Fprintf(w, "client %s, as the %s server decides", client, via)
	if via == rules.ViaMilter {
		fmt.Fprintf(w, " (delay_reject %s)", onOff(delayReject))
	}
	fmt.Fprintln(w)
	for _, v := range x.Stages {
		fmt.Fprintf(w, "%-8s %s\n", v.Stage, describe(v))
		for _, t := range v.Trace {
			fmt.Fprintf(w, "         %s\n", t)
		}
	}
	fmt.Fprintf(w, "result:  %s", describe(x.Final))
	if x.Final.Control != rules.ControlNone {
		fmt.Fprintf(w, " [%s at %s]", x.Final.Control, x.Final.Stage)
	}
	if n := len(x.Accepted) + len(x.Refused); n > 0 {
		fmt.Fprintf(w, " (%d of %d recipients accepted)", len(x.Accepted), n)
	}
	fmt.Fprintln(w)
}

func describe(v rules.Verdict) string {
	var b strings.Builder
	b.WriteString(v.Action.String())
	if r := v.Reply(); r != "" {
		b.WriteString("  " + r)
	}
	for _, h := range v.Headers {
		b.WriteString("  +" + h.String())
	}
	if v.Disconnect {
		b.WriteString("  (session ends)")
	}
	if v.Shadow {
		b.WriteString("  (shadow: would refuse with " + v.ShadowReply() + ")")
	}
	return b.String()
}
