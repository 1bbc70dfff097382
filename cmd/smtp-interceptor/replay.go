package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// runReplay decides every session of a session log again under a
// configuration and prints which would change verdict.
func runReplay(ctx context.Context, args []string, e env) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	path := fs.String("c", e.defaultConfig, "configuration `file` to decide the sessions under")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	if code, done := parseFlags(fs, "smtp-interceptor replay -c FILE [--json] SESSIONS.jsonl", args, e.stdout, e.stderr); done {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "replay: want one session log ([log] sessions), e.g. replay -c new.toml /var/log/smtp-interceptor/sessions.log")
		return exitUsage
	}
	if *path == "" {
		fmt.Fprintln(e.stderr, "replay: -c is required: the configuration to try")
		return exitUsage
	}
	cfg, err := rules.Load(*path)
	if err != nil {
		fmt.Fprintf(e.stderr, "replay: %v\n", err)
		return exitUsage
	}
	records, bad, err := readSessionLog(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(e.stderr, "replay: %v\n", err)
		return exitFail
	}
	if bad > 0 {
		fmt.Fprintf(e.stderr, "replay: %d lines of %s are not session records; skipped\n", bad, fs.Arg(0))
	}
	// [recipients] verify asks the live directory, through its cache;
	// without one every recipient is taken to exist.
	dir, err := newDirectoryClient(cfg, nil, nil)
	if err != nil {
		fmt.Fprintf(e.stderr, "replay: %v; every recipient is taken to exist\n", err)
	}
	if dir != nil {
		defer dir.Close()
	}
	rep := rules.Replay(ctx, cfg, records, engineDirectory(dir))
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(e.stderr, "replay: %v\n", err)
			return exitFail
		}
		return exitOK
	}
	printReplay(e.stdout, rep)
	return exitOK
}

// readSessionLog reads a session log: one JSON record a line. Lines that
// are not records (cut, foreign) are counted, not fatal.
func readSessionLog(path string) ([]rules.MessageRecord, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read session log: %w", err)
	}
	defer f.Close()
	var out []rules.MessageRecord
	bad := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var r rules.MessageRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.ClientIP == "" && r.Session == "" {
			bad++
			continue
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return out, bad, fmt.Errorf("read session log %s: %w", path, err)
	}
	return out, bad, nil
}

func printReplay(w io.Writer, rep rules.ReplayReport) {
	fmt.Fprintf(w, "%d sessions, %d would change verdict\n", rep.Sessions, rep.Changed)
	for _, g := range rep.Groups {
		entry := ""
		if g.Entry != "" {
			entry = fmt.Sprintf(" %q", g.Entry)
		}
		fmt.Fprintf(w, "%5d  %s  %s%s\n", g.Count, g.Change, g.Control, entry)
		for _, x := range g.Examples {
			reply := ""
			if x.Reply != "" {
				reply = "  " + x.Reply
			}
			fmt.Fprintf(w, "         %s %s: %s → %s%s\n", x.Session, x.ClientIP, x.Was, x.Now, reply)
		}
	}
}
