package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// runStats prints the counters of a running server the Domino way
// ("SMTP.DNSBL.zen.spamhaus.org.TotalHits = 35"), read from its /stats.
func runStats(ctx context.Context, args []string, e env) int {
	stdout, stderr := e.stdout, e.stderr
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file` whose [server] metrics address to ask")
	addr := fs.String("addr", "", "metrics `address` of the server (default: [server] metrics, 127.0.0.1:10062)")
	expand := fs.Bool("expand", false, "add Domino's expanded statistics: hits per site per client IP")
	asJSON := fs.Bool("json", false, "print the server's /stats document as it is")
	entries := fs.Bool("entries", false, "list every list entry with its hits and last hit, instead of the counters")
	unused := fs.Bool("unused", false, "with --entries: only the entries that never matched")
	cluster := fs.Bool("cluster", false, "the fleet's counters, summed and per relay, from [state] (backend = \"redis\")")
	if code, done := parseFlags(fs, "smtp-interceptor stats [-c FILE | --addr A] [--expand] [--json] [--entries [--unused]] [--cluster]", args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "stats: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *cluster {
		cfg, ok := loadConfig(e.configPath(fs, *given), stderr)
		if !ok {
			return exitUsage
		}
		return printCluster(ctx, cfg, stdout, *asJSON)
	}
	target := *addr
	if target == "" {
		cfg, ok := loadConfig(e.configPath(fs, *given), stderr)
		if !ok {
			return exitUsage
		}
		if target = cfg.Server.Metrics; target == "" {
			fmt.Fprintln(stderr, "stats: [server] metrics is off; give --addr")
			return exitUsage
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+"/stats", nil)
	if err != nil {
		fmt.Fprintf(stderr, "stats: %v\n", err)
		return exitUsage
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "stats: ask %s: %v\n", target, err)
		return exitFail
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "stats: %s answered %s\n", target, resp.Status)
		return exitFail
	}
	var st metrics.Stats
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err == nil {
		err = json.Unmarshal(body, &st)
	}
	if err != nil {
		fmt.Fprintf(stderr, "stats: read %s: %v\n", target, err)
		return exitFail
	}
	if *asJSON {
		stdout.Write(body)
		return exitOK
	}
	if *entries || *unused {
		printEntries(stdout, st.Entries, *unused)
		return exitOK
	}
	printStats(stdout, &st, *expand)
	return exitOK
}

// printStats writes Domino's statistic names, then smtp-interceptor's own
// under SMTPInterceptor (metrics.Stats.Named).
func printStats(w io.Writer, st *metrics.Stats, expand bool) {
	for _, n := range st.Named(expand) {
		fmt.Fprintf(w, "%s = %s\n", n.Name, n.Value)
	}
}

// printEntries writes one line per list entry: its key, the entry as
// written, its hits and its last hit ("never" when it never matched).
// Counts survive reloads for entries that stay; they start at the
// server's start.
func printEntries(w io.Writer, entries []rules.EntryHit, unusedOnly bool) {
	for _, e := range entries {
		if unusedOnly && e.Hits > 0 {
			continue
		}
		last := "never"
		if !e.LastHit.IsZero() {
			last = e.LastHit.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s %s hits=%d last=%s\n", e.Key, strconv.Quote(e.Entry), e.Hits, last)
	}
}
