// Command smtp-interceptor enforces HCL Domino's SMTP inbound controls for
// a Postfix or Sendmail relay, over the Postfix policy delegation protocol
// and the milter protocol.
//
// Usage:
//
//	smtp-interceptor serve   [-c FILE]
//	smtp-interceptor check   [-c FILE]
//	smtp-interceptor stats   [-c FILE | --addr A] [--expand] [--json]
//	smtp-interceptor bench   policy|milter --addr A [-c CONNS] [-n COUNT] [--hit SHARE]
//	smtp-interceptor explain [-c FILE] --ip A [--name H] [--helo H] [--from S] [--rcpt R]... [--json]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, as check and explain document them.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and failed (e.g. a server error)
	exitUsage = 2 // bad usage or bad configuration
)

const usage = `usage: smtp-interceptor <command> [flags]

commands:
  serve    run the policy and milter servers
  check    validate a configuration and summarize it
  explain  run one simulated session and show every decision
  stats    print a running server's counters the Domino way
  bench    drive a policy server or a milter with load and measure it

Run "smtp-interceptor <command> -h" for a command's flags.
`

func main() {
	// A log reader that goes away (a closed pipe on standard error) must
	// not kill the server: writes then fail with EPIPE, as Postfix ignores
	// SIGPIPE too.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "stats":
		return runStats(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "explain":
		return runExplain(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "smtp-interceptor: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}
