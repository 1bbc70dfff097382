package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// runBench dispatches the load generators.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: smtp-interceptor bench policy|milter --addr A [-c CONNS] [-n COUNT] [--hit SHARE]\n       smtp-interceptor bench null-policy|null-milter --listen A")
		return exitUsage
	}
	switch args[0] {
	case "policy":
		return runBenchPolicy(ctx, args[1:], stdout, stderr)
	case "milter":
		return runBenchMilter(ctx, args[1:], stdout, stderr)
	case "null-policy", "null-milter":
		return runBenchNull(ctx, args[0], args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "bench: unknown target %q (want policy, milter, null-policy or null-milter)\n", args[0])
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
