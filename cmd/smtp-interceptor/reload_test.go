package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

const (
	refused = "action=550 5.7.1 Connection denied based on policy reason"
	// watchingLine is logged once the reloader watches its files: a change
	// made before it might not be seen.
	watchingLine = "watching the configuration files for changes"
)

// startLiveAt runs serve on the configuration at cfgPath, which the test
// has laid out (links and all); run is where configText put the socket.
func startLiveAt(t *testing.T, cfgPath, run string) *liveServer {
	t.Helper()
	ls := &liveServer{dir: run, cfgPath: cfgPath, sock: filepath.Join(run, "policy.sock"),
		stderr: &syncBuffer{}, hup: make(chan struct{}, 1), usr1: make(chan struct{}, 1), reloaded: make(chan error, 16)}
	cfg, err := rules.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- serveWith(ctx, serveOptions{path: cfgPath, cfg: cfg, stdout: io.Discard, stderr: ls.stderr,
			hup: ls.hup, usr1: ls.usr1, reloaded: ls.reloaded})
	}()
	var once sync.Once
	code := 0
	ls.stop = func() int {
		once.Do(func() { cancel(); code = <-done })
		return code
	}
	t.Cleanup(func() {
		ls.stop()
		if t.Failed() {
			t.Log("server log:\n" + ls.stderr.String())
		}
	})
	waitWatching(t, ls)
	return ls
}

// startWatched is startLive, returning once the reloader watches.
func startWatched(t *testing.T, extra string) *liveServer {
	t.Helper()
	ls := startLive(t, extra)
	waitWatching(t, ls)
	return ls
}

func waitWatching(t *testing.T, ls *liveServer) {
	t.Helper()
	waitFor(t, "the reloader to watch", func() bool { return strings.Contains(ls.stderr.String(), watchingLine) })
}

// nextReload waits for the result of the next reload.
func nextReload(t *testing.T, ls *liveServer) error {
	t.Helper()
	select {
	case err := <-ls.reloaded:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting for a reload")
		return nil
	}
}

// swapLink points link at target atomically, as kubelet swaps ..data: a
// new link renamed over the old one.
func swapLink(t *testing.T, target, link string) {
	t.Helper()
	tmp := link + ".tmp"
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// slowStep is one write of a slow writer, then a pause.
type slowStep struct {
	text  string
	pause time.Duration
}

// writeSlowly rewrites path in place (truncating it, as a shell
// redirection does) step by step, and reports when it is done.
func writeSlowly(path string, steps []slowStep) <-chan error {
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			done <- err
			return
		}
		for _, s := range steps {
			if _, err := f.WriteString(s.text); err != nil {
				f.Close()
				done <- err
				return
			}
			time.Sleep(s.pause) // the scenario: a writer that pauses
		}
		done <- f.Close()
	}()
	return done
}

// A list rewritten in place, slowly, is never applied half written: the
// listed client stays refused at every check until the whole new content
// is applied.
func TestReloadWaitsForSlowWriter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []slowStep
		last  string // listed only by the final content
	}{
		// { sleep 1; cat list; } > bl.txt
		{"truncated, then written a second later", []slowStep{{"", time.Second}, {"192.0.2.66\n192.0.2.77\n", 0}}, "192.0.2.77"},
		// Half the list, a pause shorter than the stability gap, the rest:
		// applying the first half would let 192.0.2.66 through.
		{"half written, then the rest", []slowStep{{"192.0.2.77\n", 500 * time.Millisecond}, {"192.0.2.66\n", 0}}, "192.0.2.77"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ls := startWatched(t, "")
			is.Equal(ls.ask(t, "192.0.2.66"), refused)
			writing := writeSlowly(filepath.Join(ls.dir, "bl.txt"), tc.steps)
			checks, written := 0, false
			deadline := time.Now().Add(20 * time.Second)
			for {
				is.Equal(ls.ask(t, "192.0.2.66"), refused) // at every check
				if !written {
					checks++
					select {
					case err := <-writing:
						is.NoErr(err)
						written = true
					default:
					}
				} else if ls.ask(t, tc.last) == refused {
					break // the final content is applied
				}
				if time.Now().After(deadline) {
					t.Fatal("the final content was never applied")
				}
			}
			is.True(checks > 1) // the server was asked while the writer ran
		})
	}
}

// A configuration truncated to nothing is not applied (it would turn
// every control and log off) until the administrator asks with SIGHUP.
func TestReloadRefusesEmptiedConfig(t *testing.T) {
	is := is.New(t)
	ls := startWatched(t, "message = \"Old %s\"\n")
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Old 192.0.2.66")

	is.NoErr(os.Truncate(ls.cfgPath, 0))
	err := nextReload(t, ls)
	is.True(errors.Is(err, errEmptied))
	waitFor(t, "the error naming the file", func() bool {
		log := ls.stderr.String()
		return strings.Contains(log, "level=ERROR msg=\"configuration file became empty; the running configuration stays (send SIGHUP / systemctl reload to apply it if that is meant)\" file="+ls.cfgPath)
	})
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Old 192.0.2.66") // the old configuration serves
	body := httpGet(t, "http://"+ls.metricsAddr(t)+"/metrics")
	is.True(regexp.MustCompile(`smtp_interceptor_config_reloads_total\{result="error"\} 1\n`).MatchString(body))
	is.True(!strings.Contains(ls.stderr.String(), "configuration reloaded"))

	// The administrator means it: the defaults (no blacklist) apply.
	ls.hup <- struct{}{}
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.66"), "action=DUNNO")
	waitFor(t, "the warning", func() bool {
		return strings.Contains(ls.stderr.String(), "configuration file is empty; applied as SIGHUP asked")
	})
	is.Equal(ls.stop(), 0)
}

// A list emptied on purpose: refused automatically (a comment-only file is
// empty), applied on SIGHUP; once empty, it may stay empty.
func TestReloadListEmptiedOnPurpose(t *testing.T) {
	is := is.New(t)
	ls := startWatched(t, "")
	list := filepath.Join(ls.dir, "bl.txt")
	writeFile(t, list, "# nobody is blacklisted for now\n\n   \n")
	is.True(errors.Is(nextReload(t, ls), errEmptied))
	waitFor(t, "the error naming the list", func() bool {
		return strings.Contains(ls.stderr.String(), "msg=\"list file became empty; the running configuration stays (send SIGHUP / systemctl reload to apply it if that is meant)\" file="+list)
	})
	is.Equal(ls.ask(t, "192.0.2.66"), refused)

	ls.hup <- struct{}{}
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.66"), "action=DUNNO")

	// Empty when applied, empty still: a configuration edit applies.
	writeFile(t, ls.cfgPath, configText(ls.dir, "message = \"New %s\"\n"))
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.66"), "action=DUNNO")
	writeFile(t, list, "192.0.2.66\n")
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 New 192.0.2.66")
	is.Equal(ls.stop(), 0)
}

// A Kubernetes ConfigMap: the files are links through ..data, which kubelet
// swaps for a link to a new version directory, then removes the old one.
func TestReloadConfigMapSwap(t *testing.T) {
	is := is.New(t)
	mount, run := t.TempDir(), t.TempDir()
	version := func(name, message, list string) {
		is.NoErr(os.Mkdir(filepath.Join(mount, name), 0o755))
		writeFile(t, filepath.Join(mount, name, "config.toml"), configText(run, "message = \""+message+"\"\n"))
		writeFile(t, filepath.Join(mount, name, "bl.txt"), list)
	}
	version("..2026_01_01_v1", "V1 %s", "192.0.2.66\n")
	symlink(t, "..2026_01_01_v1", filepath.Join(mount, "..data"))
	symlink(t, "..data/config.toml", filepath.Join(mount, "config.toml"))
	symlink(t, "..data/bl.txt", filepath.Join(mount, "bl.txt"))
	ls := startLiveAt(t, filepath.Join(mount, "config.toml"), run)
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 V1 192.0.2.66")

	// The swap alone is seen (the old version stays until it is applied).
	version("..2026_01_02_v2", "V2 %s", "192.0.2.66\n192.0.2.77\n")
	swapLink(t, "..2026_01_02_v2", filepath.Join(mount, "..data"))
	waitFor(t, "version 2", func() bool { return ls.ask(t, "192.0.2.77") == "action=550 5.7.1 V2 192.0.2.77" })
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 V2 192.0.2.66")
	is.NoErr(os.RemoveAll(filepath.Join(mount, "..2026_01_01_v1")))

	// The watches followed: the next swap is seen too, the old version
	// removed at once, as kubelet does.
	version("..2026_01_03_v3", "V3 %s", "192.0.2.77\n")
	swapLink(t, "..2026_01_03_v3", filepath.Join(mount, "..data"))
	is.NoErr(os.RemoveAll(filepath.Join(mount, "..2026_01_02_v2")))
	waitFor(t, "version 3", func() bool { return ls.ask(t, "192.0.2.66") == "action=DUNNO" })
	is.Equal(ls.ask(t, "192.0.2.77"), "action=550 5.7.1 V3 192.0.2.77")
	for len(ls.reloaded) > 0 {
		is.NoErr(<-ls.reloaded)
	}
	is.Equal(ls.stop(), 0)
}

// The configuration is a link to a link to a file, each in its own
// directory: an edit of the file, a new target for the middle link, an
// edit of the new file all reload.
func TestReloadLinkedConfig(t *testing.T) {
	is := is.New(t)
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(a, "bl.txt"), "192.0.2.66\n")
	writeFile(t, filepath.Join(c, "real.toml"), configText(a, "message = \"Real %s\"\n"))
	symlink(t, filepath.Join(c, "real.toml"), filepath.Join(b, "current.toml"))
	symlink(t, filepath.Join(b, "current.toml"), filepath.Join(a, "config.toml"))
	ls := startLiveAt(t, filepath.Join(a, "config.toml"), a)
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Real 192.0.2.66")

	writeFile(t, filepath.Join(c, "real.toml"), configText(a, "message = \"Edited %s\"\n"))
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Edited 192.0.2.66")

	writeFile(t, filepath.Join(c, "next.toml"), configText(a, "message = \"Next %s\"\n"))
	swapLink(t, filepath.Join(c, "next.toml"), filepath.Join(b, "current.toml"))
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Next 192.0.2.66")

	writeFile(t, filepath.Join(c, "next.toml"), configText(a, "message = \"Next again %s\"\n"))
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Next again 192.0.2.66")
	is.Equal(ls.stop(), 0)
}

// Events that change no file of the configuration do not reload: another
// file in the watched directory (the logs are there too), or a mode
// change of the list file.
func TestReloadIgnoresUnrelatedChanges(t *testing.T) {
	is := is.New(t)
	ls := startWatched(t, "")
	for i := range 3 {
		writeFile(t, filepath.Join(ls.dir, "notes.txt"), strings.Repeat("x", i+1))
		is.Equal(ls.ask(t, "192.0.2.66"), refused) // writes the fail2ban log, in the same directory
	}
	is.NoErr(os.Chmod(filepath.Join(ls.dir, "bl.txt"), 0o600))
	// An absence: wait well past the coalescing and the stability gap.
	select {
	case err := <-ls.reloaded:
		t.Fatalf("reloaded (%v) on changes to no configuration file", err)
	case <-time.After(3 * (reloadDelay + stableGap)):
	}

	// The watch is alive: a real edit reloads.
	writeFile(t, filepath.Join(ls.dir, "bl.txt"), "192.0.2.77\n")
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.77"), refused)
	is.Equal(ls.stop(), 0)
}

// A file that never stops changing is reloaded once the wait reaches its
// bound. The reloader runs alone here, with short waits.
func TestReloadGivesUpWaitingOnConstantChange(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "bl.txt")
	writeFile(t, list, "192.0.2.66\n")
	cfgPath := filepath.Join(dir, "config.toml")
	writeFile(t, cfgPath, configText(dir, ""))
	cfg, err := rules.Load(cfgPath)
	is.NoErr(err)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	counters := new(rules.Counters)
	engine := rules.NewEngine(cfg, rules.EngineOptions{Logger: log, Counters: counters})
	sessions, err := logfile.New("", io.Discard)
	is.NoErr(err)
	defer sessions.Close()
	f2b, err := logfile.New("", io.Discard)
	is.NoErr(err)
	defer f2b.Close()
	done := make(chan error, 16)
	r := &reloader{path: cfgPath, engine: engine, counters: counters, log: log, level: new(slog.LevelVar),
		sessions: sessions, fail2ban: f2b, done: done,
		settle: 20 * time.Millisecond, stable: 200 * time.Millisecond, patience: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.run(ctx, nil, nil) })
	defer func() { cancel(); wg.Wait() }()
	waitFor(t, "the reloader to watch", func() bool { return strings.Contains(logs.String(), watchingLine) })

	// Append to the list more often than the stability gap, for longer
	// than the bound, unless the reload comes first.
	stop, wrote := make(chan struct{}), make(chan error, 1)
	go func() {
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			wrote <- err
			return
		}
		defer f.Close()
		end := time.After(15 * time.Second)
		for {
			select {
			case <-stop:
				wrote <- nil
				return
			case <-end:
				wrote <- errors.New("no reload while the file kept changing")
				return
			case <-time.After(10 * time.Millisecond): // the scenario: a busy writer
				if _, err := f.WriteString("# still writing\n"); err != nil {
					wrote <- err
					return
				}
			}
		}
	}()
	select {
	case err := <-done:
		is.NoErr(err)
	case err := <-wrote:
		t.Fatalf("writer ended first: %v", err)
	}
	close(stop)
	is.NoErr(<-wrote)
	is.True(strings.Contains(logs.String(), "configuration files still changing; reloading without waiting for them to settle"))
}

func TestLinkChain(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := func(names ...string) string { return filepath.Join(append([]string{base}, names...)...) }
	for _, d := range []string{"sub/inner", "other"} {
		if err := os.MkdirAll(p(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, p("f"), "x")
	writeFile(t, p("sub/f"), "x")
	writeFile(t, p("other/g"), "x")
	symlink(t, "f", p("rel"))                      // relative
	symlink(t, p("rel"), p("other/abs"))           // absolute, to a link
	symlink(t, "sub/inner", p("dirlink"))          // a directory
	symlink(t, "../other/g", p("sub/up"))          // up, then down
	symlink(t, "loop2", p("loop1"))                // a loop
	symlink(t, "loop1", p("loop2"))                //
	symlink(t, "nowhere", p("dangling"))           // to nothing
	symlink(t, "../dirlink/../f", p("sub/dotdot")) // ".." after a link is the link target's parent

	for _, tc := range []struct {
		path  string
		chain []string
		err   string
	}{
		{p("f"), []string{p("f")}, ""},
		{p("rel"), []string{p("rel"), p("f")}, ""},
		{p("other/abs"), []string{p("other/abs"), p("rel"), p("f")}, ""},
		{base + "/dirlink/../f", []string{p("dirlink"), p("sub/f")}, ""},
		{p("sub/up"), []string{p("sub/up"), p("other/g")}, ""},
		{p("sub/dotdot"), []string{p("sub/dotdot"), p("dirlink"), p("sub/f")}, ""},
		{p("missing"), []string{p("missing")}, "no such file"},
		{p("dangling"), []string{p("dangling"), p("nowhere")}, "no such file"},
		{p("loop1"), nil, "more than 40 symbolic links"},
	} {
		t.Run(strings.TrimPrefix(tc.path, base), func(t *testing.T) {
			is := is.New(t)
			chain, err := linkChain(tc.path)
			if tc.err != "" {
				is.True(err != nil && strings.Contains(err.Error(), tc.err))
			} else {
				is.NoErr(err)
				end, err := filepath.EvalSymlinks(tc.path)
				is.NoErr(err)
				is.Equal(chain[len(chain)-1], end) // the file filepath.EvalSymlinks reaches
			}
			if tc.chain != nil {
				is.Equal(chain, tc.chain)
			}
		})
	}
}

func TestHasContent(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		want       bool
	}{
		{"no byte", "", false},
		{"blank lines", "\n\n \t\r\n", false},
		{"comments only", "# a list\n   # indented\n#\n", false},
		{"an entry", "192.0.2.1", true},
		{"an entry after comments", "# a list\n\n  192.0.2.1 # why\n", true},
		{"a table header", "# config\n[server]\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			writeFile(t, path, tc.text)
			is.Equal(hasContent(path), tc.want)
		})
	}
}

// TestReloadLogsWhatChanged: a reload names the file that triggered it
// and each change, list entries added and removed with the list sizes.
func TestReloadLogsWhatChanged(t *testing.T) {
	is := is.New(t)
	ls := startWatched(t, "")
	bl := filepath.Join(ls.dir, "bl.txt")
	writeFile(t, bl, "192.0.2.77\n192.0.2.78\n")
	is.NoErr(nextReload(t, ls))
	waitFor(t, "the reload log", func() bool { return strings.Contains(ls.stderr.String(), "trigger="+bl+" changes=1") })
	out := ls.stderr.String()
	is.True(strings.Contains(out, `msg="configuration change" key=blacklist.hosts added=2 removed=1 before=1 after=2 added_entries="\"192.0.2.77\", \"192.0.2.78\"" removed_entries="\"192.0.2.66\""`))
	is.True(strings.Contains(out, `msg="configuration files changed: reloading" changed=`+bl))
}

// TestReloadOnSignalOnly: with [server] reload = "signal" a file change is
// not applied until SIGHUP.
func TestReloadOnSignalOnly(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bl.txt"), "192.0.2.66\n")
	cfgPath := filepath.Join(dir, "config.toml")
	writeFile(t, cfgPath, strings.Replace(configText(dir, ""), "milter = []", "milter = []\nreload = \"signal\"", 1))
	ls := startLiveAt(t, cfgPath, dir)
	writeFile(t, filepath.Join(ls.dir, "bl.txt"), "192.0.2.77\n")
	select {
	case err := <-ls.reloaded:
		t.Fatalf("reloaded (%v) on a file change with reload = \"signal\"", err)
	case <-time.After(3 * (reloadDelay + stableGap)):
	}
	is.Equal(ls.ask(t, "192.0.2.77"), "action=DUNNO")
	ls.hup <- struct{}{}
	is.NoErr(nextReload(t, ls))
	is.Equal(ls.ask(t, "192.0.2.77"), refused)
	waitFor(t, "the reload log", func() bool { return strings.Contains(ls.stderr.String(), "trigger=SIGHUP") })
}

// TestStartupLog: at start the server says its version, configuration,
// mode and list sizes.
func TestStartupLog(t *testing.T) {
	ls := startWatched(t, "")
	waitFor(t, "the start-up lines", func() bool {
		out := ls.stderr.String()
		return strings.Contains(out, "msg=starting version=") && strings.Contains(out, "mode=enforce") &&
			strings.Contains(out, "msg=lists blacklist.hosts=1")
	})
}
