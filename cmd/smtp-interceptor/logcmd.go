package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

const logSynopsis = "smtp-interceptor log [-c FILE] [--ip A|CIDR] [--from S] [--rcpt R] [--control C] [--verdict V] [--since 24h] [--until T] [--limit N] [--json]"

// runLog prints the sessions of the session store ([log] store) that the
// filters select, newest first. It opens the database read-only: the
// server may be writing it.
func runLog(ctx context.Context, args []string, e env) int {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file` whose [log] store is the session store")
	ip := fs.String("ip", "", "client `address`, or network in CIDR notation (192.0.2.0/24)")
	from := fs.String("from", "", "sender `address`, any case, or a pattern where * is any text (*@example.com); \"<>\" is the null sender")
	rcpt := fs.String("rcpt", "", "recipient `address` or pattern, accepted or refused")
	control := fs.String("control", "", "the `control` that decided: blacklist, dns_blacklist, greylist, recipients, ...")
	verdict := fs.String("verdict", "", "the `action`: accept, tag, reject, tempfail, or refused (reject or tempfail)")
	since := fs.String("since", "24h", "sessions from this `time` on: a duration ago (24h, 7d, 1d12h) or an RFC 3339 time; \"\" for no bound")
	until := fs.String("until", "", "sessions before this `time`: a duration ago or an RFC 3339 time")
	limit := fs.Int("limit", 100, "print the newest `N` sessions at most")
	asJSON := fs.Bool("json", false, `print one JSON object a line: {"id": N, ...the record's fields}`)
	if code, done := parseFlags(fs, logSynopsis, args, e.stdout, e.stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "log: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	now := time.Now()
	f := sessionstore.Filter{IP: *ip, From: *from, Rcpt: *rcpt, Control: *control, Verdict: *verdict}
	for _, w := range []struct {
		flag string
		v    string
		t    *time.Time
	}{{"since", *since, &f.Since}, {"until", *until, &f.Until}} {
		t, err := parseWhen(w.v, now)
		if err != nil {
			fmt.Fprintf(e.stderr, "log: --%s %q: %v\n", w.flag, w.v, err)
			return exitUsage
		}
		*w.t = t
	}
	if *limit < 1 {
		fmt.Fprintf(e.stderr, "log: --limit %d: want 1 or more\n", *limit)
		return exitUsage
	}
	if err := f.Validate(); err != nil {
		fmt.Fprintf(e.stderr, "log: %s\n", filterFlagError(err))
		return exitUsage
	}

	path := e.configPath(fs, *given)
	e.noteDefaults("log", path, fs)
	cfg, ok := loadConfig(path, e.stderr)
	if !ok {
		return exitUsage
	}
	if cfg.Log.Store == "" {
		where := path
		if where == "" {
			where = "the built-in configuration"
		}
		fmt.Fprintf(e.stderr, "log: %s sets no session store: set log.store ([log] store = \"/var/lib/smtp-interceptor/sessions.db\") for the server, and give log the same configuration with -c\n", where)
		return exitUsage
	}
	r, err := sessionstore.OpenReader(cfg.Log.Store)
	if err != nil {
		fmt.Fprintf(e.stderr, "log: %v (log.store in %s)\n", err, path)
		return exitFail
	}
	defer r.Close()

	var out logPrinter = newTextLog(e.stdout)
	if *asJSON {
		out = &jsonLog{w: e.stdout}
	}
	shown, more := 0, false
	for shown < *limit {
		f.Limit = min(*limit-shown, sessionstore.MaxLimit)
		p, err := r.Query(ctx, f)
		if err != nil {
			fmt.Fprintf(e.stderr, "log: %v\n", err)
			return exitFail
		}
		for _, en := range p.Entries {
			if err := out.print(en); err != nil {
				fmt.Fprintf(e.stderr, "log: %v\n", err)
				return exitFail
			}
		}
		shown += len(p.Entries)
		more = p.More
		if !p.More {
			break
		}
		f.Before = p.Entries[len(p.Entries)-1].ID
	}
	if err := out.flush(shown); err != nil {
		fmt.Fprintf(e.stderr, "log: %v\n", err)
		return exitFail
	}
	if more {
		fmt.Fprintf(e.stderr, "log: the newest %d sessions shown; more match: narrow the filters or raise --limit\n", shown)
	}
	return exitOK
}

// parseWhen reads a --since or --until value: a duration before now
// (with days: 7d, 1d12h), or an RFC 3339 time; "" is no bound (the zero
// time).
func parseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := parseDays(v); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("want a duration ago, not a negative one")
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("want a duration ago such as 24h or 7d, or an RFC 3339 time such as 2026-03-01T12:00:00Z")
}

// parseDays is time.ParseDuration with days before the rest: "7d",
// "1d12h", as the configuration writes durations.
func parseDays(v string) (time.Duration, error) {
	days, rest, ok := strings.Cut(v, "d")
	if !ok {
		return time.ParseDuration(v)
	}
	n, err := strconv.Atoi(days)
	if err != nil || n < 0 || n > 100000 {
		return 0, fmt.Errorf("bad days in %q", v)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, err
		}
		d += r
	}
	return d, nil
}

// filterFlagError words a refused filter for the command line: its
// fields are the flags.
func filterFlagError(err error) string {
	var fe *sessionstore.FilterError
	if errors.As(err, &fe) {
		return "--" + fe.Field + " " + fe.Msg
	}
	return err.Error()
}

// logPrinter prints the sessions one by one; flush ends the listing,
// given how many were printed.
type logPrinter interface {
	print(sessionstore.Entry) error
	flush(n int) error
}

// jsonLog prints a JSON object a line: the id, then the record's fields.
type jsonLog struct {
	w   io.Writer
	buf bytes.Buffer
}

func (j *jsonLog) print(en sessionstore.Entry) error {
	j.buf.Reset()
	enc := json.NewEncoder(&j.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(en.Record); err != nil {
		return fmt.Errorf("encode session %d: %w", en.ID, err)
	}
	rec := j.buf.Bytes() // {"time":...}\n
	if _, err := fmt.Fprintf(j.w, `{"id":%d,%s`, en.ID, rec[1:]); err != nil {
		return err
	}
	return nil
}

func (j *jsonLog) flush(int) error { return nil }

// textLog prints a line a session, in aligned columns: time, id, client,
// sender, recipients, verdict, reply.
type textLog struct {
	w  io.Writer
	tw *tabwriter.Writer
}

func newTextLog(w io.Writer) *textLog {
	return &textLog{w: w, tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
}

func (t *textLog) print(en sessionstore.Entry) error {
	r := &en.Record
	_, err := fmt.Fprintf(t.tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n",
		r.Time.Local().Format(time.RFC3339), en.ID, orDash(clean(r.ClientIP)), sender(r),
		recipients(r), verdictText(r), clean(reply(r.Code, r.EnhancedCode, r.Text)))
	return err
}

func (t *textLog) flush(n int) error {
	if n == 0 {
		_, err := fmt.Fprintln(t.w, "no sessions match")
		return err
	}
	return t.tw.Flush()
}

// sender is the MAIL FROM as log prints it: <> for the null sender, -
// when the client sent none.
func sender(r *rules.MessageRecord) string {
	switch {
	case r.MailFrom == nil:
		return "-"
	case *r.MailFrom == "":
		return "<>"
	}
	return clean(*r.MailFrom)
}

// recipients lists the accepted recipients, then the refused ones,
// marked.
func recipients(r *rules.MessageRecord) string {
	var list []string
	for _, a := range r.Recipients {
		list = append(list, clean(a))
	}
	for _, a := range r.Refused {
		list = append(list, clean(a)+" (refused)")
	}
	if len(list) == 0 {
		return "-"
	}
	return strings.Join(list, ", ")
}

// verdictText is the action and the control that decided, and what
// shadow mode did not refuse.
func verdictText(r *rules.MessageRecord) string {
	s := r.Action.String()
	if r.Control != rules.ControlNone {
		s += " " + clean(string(r.Control))
	}
	if w := r.WouldRefuse; w != nil {
		s += fmt.Sprintf(" (shadow: would refuse at %s by %s: %s)", w.Stage, clean(string(w.Control)), clean(reply(w.Code, w.EnhancedCode, w.Text)))
	}
	return s
}

// reply is an SMTP reply as the client saw it: "550 5.7.1 text".
func reply(code int, enhanced, text string) string {
	var parts []string
	if code != 0 {
		parts = append(parts, strconv.Itoa(code))
	}
	for _, p := range []string{enhanced, text} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clean escapes what a client sent that a terminal would act on (control
// characters, a tab that would shift the columns), Go-style.
func clean(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r != ' ' && !unicode.IsGraphic(r) }) < 0 {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}
