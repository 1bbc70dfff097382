// Command smtp-interceptor enforces HCL Domino's SMTP inbound controls for
// a Postfix or Sendmail relay, over the Postfix policy delegation protocol
// and the milter protocol.
//
// Usage:
//
//	smtp-interceptor serve   [-c FILE]
//	smtp-interceptor check   [-c FILE] [--probe]
//	smtp-interceptor stats   [-c FILE | --addr A] [--expand] [--json]
//	smtp-interceptor bench   policy|milter --addr A [--conns CONNS] [-n COUNT] [--hit SHARE]
//	smtp-interceptor explain [-c FILE] --ip A [--name H] [--helo H] [--from S] [--rcpt R]... [--json]
//	smtp-interceptor replay -c FILE [--json] SESSIONS.jsonl
//	smtp-interceptor version
//
// -c defaults to /etc/smtp-interceptor/config.toml when that file exists,
// else the built-in defaults apply. The manual pages are
// smtp-interceptor(8) and smtp-interceptor.toml(5), in contrib/man.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
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

// defaultConfig is the configuration file -c names when it is not given,
// if that file exists (the .deb installs it).
const defaultConfig = "/etc/smtp-interceptor/config.toml"

const usage = `usage: smtp-interceptor <command> [flags]

commands:
  serve    run the policy and milter servers
  check    validate a configuration and summarize it
  explain  run one simulated session and show every decision
  replay   decide a session log again under a configuration
  stats    print a running server's counters the Domino way (--cluster: the fleet's)
  log      search the session store ([log] store): by client, sender, recipient, control, verdict, time
  ban      ban a client address or network on every relay of the fleet
  unban    lift a ban
  bans     list the bans in force
  admin-user  add, remove or list the web console's users ([admin] users_file)
  bench    drive a policy server or a milter with load and measure it
  version  print the version, the Go version and the platform

-c FILE defaults to ` + defaultConfig + ` when it exists, else the
built-in defaults apply. Run "smtp-interceptor <command> -h" for a
command's flags; man smtp-interceptor and smtp-interceptor.toml for the rest.
`

// env is what a command runs with: where it writes, and the configuration
// file -c defaults to (tests point it elsewhere).
type env struct {
	// stdin is nil where a command has no standard input (the tests);
	// admin-user reads a password from it.
	stdin          io.Reader
	stdout, stderr io.Writer
	defaultConfig  string
}

func main() {
	// A log reader that goes away (a closed pipe on standard error) must
	// not kill the server: writes then fail with EPIPE, as Postfix ignores
	// SIGPIPE too.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, defaultConfig: defaultConfig})
	stop()
	os.Exit(code)
}

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], e)
	case "stats":
		return runStats(ctx, args[1:], e)
	case "bench":
		return runBench(ctx, args[1:], e.stdout, e.stderr)
	case "check":
		return runCheck(ctx, args[1:], e)
	case "explain":
		return runExplain(ctx, args[1:], e)
	case "replay":
		return runReplay(ctx, args[1:], e)
	case "log":
		return runLog(ctx, args[1:], e)
	case "ban":
		return runBan(ctx, args[1:], e)
	case "unban":
		return runUnban(ctx, args[1:], e)
	case "bans":
		return runBans(ctx, args[1:], e)
	case "admin-user":
		return runAdminUser(ctx, args[1:], e)
	case "version", "-version", "--version":
		return runVersion(args[1:], e.stdout, e.stderr)
	case "help":
		if len(args) > 1 && args[1] != "help" { // "help check": check's flags
			return run(ctx, []string{args[1], "-h"}, e)
		}
		fmt.Fprint(e.stdout, usage)
		return exitOK
	case "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(e.stderr, "smtp-interceptor: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// parseFlags parses a command's flags. -h, -help and --help print its
// usage (synopsis, then every flag) on stdout and end it with exit 0; a bad
// flag prints the error and the usage on stderr and ends it with exit 2.
// When done, the command returns code.
func parseFlags(set *flag.FlagSet, synopsis string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	set.Usage = func() {
		w := set.Output()
		fmt.Fprintf(w, "usage: %s\n", synopsis)
		n := 0
		set.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nflags:")
			set.PrintDefaults()
		}
	}
	set.SetOutput(io.Discard) // flag's own messages: written below instead
	err := set.Parse(args)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		set.SetOutput(stdout)
		set.Usage()
		return exitOK, true
	}
	fmt.Fprintf(stderr, "%s: %v\n", set.Name(), err)
	set.SetOutput(stderr)
	set.Usage()
	return exitUsage, true
}

// configFlag declares -c on set; help says what the file is for.
func (e env) configFlag(set *flag.FlagSet, help string) *string {
	return set.String("c", "", fmt.Sprintf("%s (default: %s when it exists, else the built-in defaults; -c \"\": the built-in defaults)", help, e.defaultConfig))
}

// configPath returns the configuration file a command reads once set is
// parsed: the one -c names; else e.defaultConfig unless it does not exist
// (a file that exists but cannot be read is named, so that loading it
// says why); else "", the built-in defaults. -c "" asks for the built-in
// defaults.
func (e env) configPath(set *flag.FlagSet, given string) string {
	if given != "" || flagSet(set, "c") || e.defaultConfig == "" {
		return given
	}
	if _, err := os.Stat(e.defaultConfig); errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	return e.defaultConfig
}

// noteDefaults says on stderr that cmd runs on the built-in defaults, as
// it does when path is "".
func (e env) noteDefaults(cmd, path string, set *flag.FlagSet) {
	if path != "" {
		return
	}
	why := fmt.Sprintf("no -c and no %s", e.defaultConfig)
	if flagSet(set, "c") {
		why = `-c ""`
	}
	fmt.Fprintf(e.stderr, "%s: %s: using the built-in defaults (the values config.toml.example shows)\n", cmd, why)
}
