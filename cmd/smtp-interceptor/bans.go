package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/admin"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// The synopses of the ban commands. Flags may come before or after the
// address.
const (
	banSynopsis   = "smtp-interceptor ban [-c FILE] ADDR|CIDR [--for DURATION] [--reason TEXT]"
	unbanSynopsis = "smtp-interceptor unban [-c FILE] ADDR|CIDR"
	bansSynopsis  = "smtp-interceptor bans [-c FILE] [--json]"
)

// How long the commands wait: for an admin API answer, and for a Redis
// opened directly to be reachable (its replica of the bans is filled by
// then).
const (
	cliStateTimeout = time.Second
	cliUpWait       = 2 * time.Second
)

// banTarget is where ban, unban and bans work: the running server's admin
// API, or the Redis backend of the fleet opened directly.
type banTarget interface {
	add(ctx context.Context, req admin.BanRequest) (state.Ban, error)
	remove(ctx context.Context, p netip.Prefix) (bool, error)
	list(ctx context.Context) ([]state.Ban, error)
	close()
}

// apiTarget is the admin API of the running server.
type apiTarget struct{ c *admin.Client }

func (a apiTarget) add(ctx context.Context, req admin.BanRequest) (state.Ban, error) {
	return a.c.AddBan(ctx, req)
}

func (a apiTarget) remove(ctx context.Context, p netip.Prefix) (bool, error) {
	return a.c.RemoveBan(ctx, p)
}

func (a apiTarget) list(ctx context.Context) ([]state.Ban, error) { return a.c.Bans(ctx) }

func (apiTarget) close() {}

// directTarget is the Redis backend, opened by the command itself.
type directTarget struct {
	b     state.Backend
	relay string
}

func (d directTarget) add(ctx context.Context, req admin.BanRequest) (state.Ban, error) {
	b, err := req.Ban(time.Now(), d.relay)
	if err != nil {
		return state.Ban{}, err
	}
	if err := d.b.AddBan(ctx, b); err != nil {
		return state.Ban{}, err
	}
	return b, nil
}

func (d directTarget) remove(ctx context.Context, p netip.Prefix) (bool, error) {
	return d.b.RemoveBan(ctx, p)
}

func (d directTarget) list(context.Context) ([]state.Ban, error) { return d.b.Bans(), nil }

func (d directTarget) close() { _ = d.b.Close() }

// banCmd is what the three commands share: the configuration and where
// it says the bans are.
type banCmd struct {
	name string
	e    env
	cfg  *rules.Config
}

// runBan bans an address or a network across the fleet.
func runBan(ctx context.Context, args []string, e env) int {
	fs := flag.NewFlagSet("ban", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file` whose [admin] or [state] section says where the bans are")
	forD := fs.String("for", "", "how long the ban lasts, a Go `duration`: 30m, 24h, 168h (default: it never expires)")
	reason := fs.String("reason", "", "why, one line of `text` shown by bans and logged")
	pos, code, done := parseInterspersed(fs, banSynopsis, args, e)
	if done {
		return code
	}
	if len(pos) != 1 {
		return wantOneArg(fs, pos, e)
	}
	req := admin.BanRequest{Prefix: pos[0], For: *forD, Reason: *reason}
	if _, err := req.Ban(time.Now(), ""); err != nil {
		fmt.Fprintf(e.stderr, "ban: %s\n", flagError(err))
		return exitUsage
	}
	c, ok := newBanCmd("ban", fs, *given, e)
	if !ok {
		return exitUsage
	}
	var b state.Ban
	code = c.do(ctx, func(ctx context.Context, t banTarget) (err error) {
		b, err = t.add(ctx, req)
		return err
	})
	if code != exitOK {
		return code
	}
	until := "with no expiry"
	if !b.Expires.IsZero() {
		until = "until " + b.Expires.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(e.stdout, "banned %s %s, by %s", b.Prefix, until, b.Creator)
	if b.Reason != "" {
		fmt.Fprintf(e.stdout, ": %s", b.Reason)
	}
	fmt.Fprintln(e.stdout)
	return exitOK
}

// runUnban removes the ban on exactly an address or a network.
func runUnban(ctx context.Context, args []string, e env) int {
	fs := flag.NewFlagSet("unban", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file` whose [admin] or [state] section says where the bans are")
	pos, code, done := parseInterspersed(fs, unbanSynopsis, args, e)
	if done {
		return code
	}
	if len(pos) != 1 {
		return wantOneArg(fs, pos, e)
	}
	p, err := admin.ParsePrefix(pos[0])
	if err != nil {
		fmt.Fprintf(e.stderr, "unban: %v\n", err)
		return exitUsage
	}
	c, ok := newBanCmd("unban", fs, *given, e)
	if !ok {
		return exitUsage
	}
	var removed bool
	code = c.do(ctx, func(ctx context.Context, t banTarget) (err error) {
		removed, err = t.remove(ctx, p)
		return err
	})
	switch {
	case code != exitOK:
		return code
	case !removed:
		fmt.Fprintf(e.stderr, "unban: no ban on %s\n", p)
		return exitFail
	}
	fmt.Fprintf(e.stdout, "removed %s\n", p)
	return exitOK
}

// runBans lists the bans in force.
func runBans(ctx context.Context, args []string, e env) int {
	fs := flag.NewFlagSet("bans", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file` whose [admin] or [state] section says where the bans are")
	asJSON := fs.Bool("json", false, "print the bans as a JSON array, as GET /api/bans answers")
	pos, code, done := parseInterspersed(fs, bansSynopsis, args, e)
	if done {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(e.stderr, "bans: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	c, ok := newBanCmd("bans", fs, *given, e)
	if !ok {
		return exitUsage
	}
	var bans []state.Ban
	code = c.do(ctx, func(ctx context.Context, t banTarget) (err error) {
		bans, err = t.list(ctx)
		return err
	})
	if code != exitOK {
		return code
	}
	if *asJSON {
		if bans == nil {
			bans = []state.Ban{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(bans)
		return exitOK
	}
	printBans(e.stdout, bans)
	return exitOK
}

// printBans writes the bans as a table.
func printBans(w io.Writer, bans []state.Ban) {
	if len(bans) == 0 {
		fmt.Fprintln(w, "no bans")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tEXPIRES\tCREATOR\tREASON")
	for _, b := range bans {
		expires := "never"
		if !b.Expires.IsZero() {
			expires = b.Expires.Local().Format(time.RFC3339)
		}
		reason := b.Reason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Prefix, expires, b.Creator, reason)
	}
	_ = tw.Flush()
}

// parseInterspersed parses flags that may come before and after the
// positional arguments, which it returns; "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, synopsis string, args []string, e env) (pos []string, code int, done bool) {
	rest := args
	for {
		if code, done := parseFlags(fs, synopsis, rest, e.stdout, e.stderr); done {
			return nil, code, true
		}
		left := fs.Args()
		if len(left) == 0 {
			return pos, 0, false
		}
		if k := len(rest) - len(left); k > 0 && rest[k-1] == "--" {
			return append(pos, left...), 0, false
		}
		pos = append(pos, left[0])
		rest = left[1:]
	}
}

// wantOneArg reports that a command needs exactly one address.
func wantOneArg(fs *flag.FlagSet, pos []string, e env) int {
	if len(pos) == 0 {
		fmt.Fprintf(e.stderr, "%s: want an address or a CIDR, e.g. 192.0.2.1 or 192.0.2.0/24\n", fs.Name())
	} else {
		fmt.Fprintf(e.stderr, "%s: want one address or CIDR, not %d: %s\n", fs.Name(), len(pos), strings.Join(pos, " "))
	}
	return exitUsage
}

// flagError words a refused ban request for the command line: its
// fields are the address and the flags.
func flagError(err error) string {
	var fe *admin.FieldError
	if !errors.As(err, &fe) {
		return err.Error()
	}
	switch fe.Field {
	case "prefix":
		return fe.Msg
	case "creator":
		return "creator: " + fe.Msg
	}
	return "--" + fe.Field + ": " + fe.Msg
}

// newBanCmd loads the configuration the command names.
func newBanCmd(name string, fs *flag.FlagSet, given string, e env) (*banCmd, bool) {
	path := e.configPath(fs, given)
	cfg, ok := loadConfig(path, e.stderr)
	if !ok {
		return nil, false
	}
	e.noteDefaults(name, path, fs)
	return &banCmd{name: name, e: e, cfg: cfg}, true
}

// do runs f on where the configuration says the bans are: the admin API
// of the running server when [admin] has a token and a listener;
// otherwise, with [state] backend = "redis", Redis directly. With both, a
// server that cannot be reached (connection refused) falls back to Redis.
// It returns the exit code, having said why on stderr when it fails.
func (c *banCmd) do(ctx context.Context, f func(context.Context, banTarget) error) int {
	ad, redis := c.cfg.Admin, c.cfg.State.Backend == "redis"
	if ad.Token == "" || ad.Listen == "" {
		if !redis {
			missing := "token_file"
			if ad.Token != "" {
				missing = "listen"
			}
			fmt.Fprintf(c.e.stderr, "%s: the memory backend lives in the running server: set [admin] %s so %s can reach it through the admin API\n",
				c.name, missing, c.name)
			return exitUsage
		}
		return c.direct(ctx, f)
	}
	addr := dialAddr(ad.Listen)
	actx, cancel := context.WithTimeout(ctx, admin.DefaultTimeout)
	defer cancel()
	client := &admin.Client{URL: "http://" + addr, Token: string(ad.Token)}
	if ad.TLSCert != "" {
		hc, err := admin.PinnedHTTP(ad.TLSCert)
		if err != nil {
			fmt.Fprintf(c.e.stderr, "%s: %v\n", c.name, err)
			return exitFail
		}
		client.URL, client.HTTP = "https://"+addr, hc
	}
	err := f(actx, apiTarget{client})
	if err == nil {
		return exitOK
	}
	if redis && unreachable(err) {
		fmt.Fprintf(c.e.stderr, "%s: the admin API at %s is not reachable (%v); using [state] redis directly\n", c.name, addr, rootCause(err))
		return c.direct(ctx, f)
	}
	var ae *admin.APIError
	switch {
	case errors.As(err, &ae) && ae.Status == 400:
		fmt.Fprintf(c.e.stderr, "%s: %s\n", c.name, ae.Message)
		return exitUsage
	case errors.As(err, &ae):
		fmt.Fprintf(c.e.stderr, "%s: the admin API at %s: %v\n", c.name, addr, ae)
	case unreachable(err):
		fmt.Fprintf(c.e.stderr, "%s: the admin API at %s is not reachable (is serve running?): %v\n", c.name, addr, rootCause(err))
	default:
		fmt.Fprintf(c.e.stderr, "%s: the admin API at %s: %v\n", c.name, addr, err)
	}
	return exitFail
}

// direct runs f on the Redis backend opened for the command.
func (c *banCmd) direct(ctx context.Context, f func(context.Context, banTarget) error) int {
	b, err := openCLIState(ctx, c.cfg)
	if err != nil {
		fmt.Fprintf(c.e.stderr, "%s: %v\n", c.name, err)
		return exitFail
	}
	t := directTarget{b: b, relay: relayName(c.cfg)}
	defer t.close()
	if err := f(ctx, t); err != nil {
		if fe := (*admin.FieldError)(nil); errors.As(err, &fe) {
			fmt.Fprintf(c.e.stderr, "%s: %s\n", c.name, flagError(err))
			return exitUsage
		}
		fmt.Fprintf(c.e.stderr, "%s: [state] redis %s: %v\n", c.name, strings.Join(c.cfg.State.Addrs, ","), err)
		return exitFail
	}
	return exitOK
}

// openCLIState opens the [state] Redis backend for a command, with a
// timeout of at least cliStateTimeout (a command is on no mail's path),
// and waits up to cliUpWait for it to be reachable. OpenRedis returns
// after its first connection attempt, which subscribes and then reads
// every ban into the replica, so once Up reports true Bans is complete;
// the wait covers a first attempt that failed and the retries after it.
// Its log is discarded: a failure is the returned error.
func openCLIState(ctx context.Context, cfg *rules.Config) (state.Backend, error) {
	c := *cfg
	c.State.Timeout = max(c.State.Timeout, cliStateTimeout)
	b, err := openState(&c, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, err
	}
	if !waitUp(ctx, b, cliUpWait) {
		_ = b.Close()
		return nil, fmt.Errorf("[state] redis %s: %w (not reachable within %s)", strings.Join(cfg.State.Addrs, ","), state.ErrUnavailable, cliUpWait)
	}
	return b, nil
}

// waitUp polls b.Up until it holds, for at most d.
func waitUp(ctx context.Context, b state.Backend, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !b.Up() {
		select {
		case <-ctx.Done():
			return b.Up()
		case <-tick.C:
		}
	}
	return true
}

// dialAddr is the address to reach a listener at: an unspecified host
// (":10063", "0.0.0.0:10063", "[::]:10063") is reached on loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// unreachable reports whether err is a failure to connect: nothing listens,
// so nothing was sent.
func unreachable(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// rootCause is the innermost error of err, for a short message.
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
