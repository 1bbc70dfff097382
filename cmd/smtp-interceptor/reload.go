package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-multierror"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// How an automatic reload waits for the files to be whole. An edit by
// rename is atomic, but a file rewritten in place (`cat list > bl.txt`, a
// copy, a configuration management tool, a slow network mount) goes
// through states nobody meant: empty, then half written.
const (
	// reloadDelay coalesces the events of one edit (an editor writes a
	// temporary file, renames it over the old one, changes its mode...)
	// into one reload.
	reloadDelay = 300 * time.Millisecond
	// stableGap is the gap between the two looks at the files (size,
	// modification time, inode of every file and link) once the events
	// have settled: the reload goes ahead only when nothing changed in
	// between. A second covers the pauses of a writer that is still at
	// work (a shell pipeline waiting on its producer, a copy over a slow
	// mount) while an administrator still sees the change applied in
	// under two seconds. It is also longer than the timestamp tick of
	// every common Linux filesystem, so that a write during the gap always
	// changes the modification time.
	stableGap = time.Second
	// stableLimit bounds the wait for files that never stop changing: the
	// reload then goes ahead on what is there (the empty-file refusal
	// still applies).
	stableLimit = 30 * time.Second
	// maxLinks bounds the symbolic links followed for one file, as the
	// kernel does (ELOOP).
	maxLinks = 40
)

// errEmptied marks an automatic reload refused because the configuration
// file, or a list file that had entries, became empty.
var errEmptied = errors.New("a configuration file became empty")

// reloader keeps the running configuration in step with its files: it
// reloads when the configuration file or a list file changes, and on
// SIGHUP. A configuration with errors is not applied: the old one keeps
// serving, and each error is logged and counted.
//
// An automatic reload waits until the files have been still for
// stableGap, and is refused when a file that had content is now empty
// (likely caught half written); SIGHUP reloads at once and applies what
// it finds, since the administrator asked.
type reloader struct {
	path     string
	engine   *rules.Engine
	counters *rules.Counters
	log      *slog.Logger
	level    *slog.LevelVar
	sessions *logfile.File
	fail2ban *logfile.File
	// newDNS, when set, builds and starts the DNS list client of a
	// configuration whose [dns] settings changed.
	newDNS func(cfg *rules.Config) error
	// newDirectory, when set, builds the directory client of a
	// configuration whose [directory] changed and gives it to the engine.
	newDirectory func(cfg *rules.Config) error
	// done, when set, receives the result of each reload (tests).
	done chan<- error
	// notify, when set, is told RELOADING=1 and READY=1 around each reload.
	notify notifier
	// settle, stable and patience replace reloadDelay, stableGap and
	// stableLimit when set (tests).
	settle, stable, patience time.Duration

	// What run's goroutine alone keeps between reloads.
	names   map[string]bool // every link and file whose events count
	applied snapshot        // the files as the running configuration read them
	filled  map[string]bool // files that had content when last applied
}

// run watches until ctx is done. hup forces a reload; usr1 reopens the
// log files (after logrotate).
func (r *reloader) run(ctx context.Context, hup, usr1 <-chan struct{}) {
	var events chan fsnotify.Event
	var watchErrs chan error
	var w *fsnotify.Watcher
	r.names = map[string]bool{}
	if r.path != "" {
		var err error
		if w, err = fsnotify.NewWatcher(); err != nil {
			r.log.Error("cannot watch the configuration files; reload with SIGHUP", slog.Any("error", err))
		} else {
			defer w.Close()
			events, watchErrs = w.Events, w.Errors
		}
		// Watch first, then take the fingerprints: a change in between is
		// seen as an event and compared with them.
		r.watch(w, look(r.files()))
		r.applied = look(r.files())
		r.filled = map[string]bool{}
		for f := range r.applied {
			r.filled[f] = hasContent(f)
		}
		if w != nil {
			r.log.Info("watching the configuration files for changes", slog.Int("files", len(r.applied)), slog.Int("dirs", len(w.WatchList())))
		}
	}
	settle, gap, limit := stoppedTimer(), stoppedTimer(), stoppedTimer()
	var first snapshot // the first look of the gap running
	busy := false      // a burst of changes is being waited out
	endBurst := func() {
		settle.Stop()
		gap.Stop()
		limit.Stop()
		first, busy = nil, false
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			// A wait in progress goes on: it ends comparing with what
			// this reload applied.
			r.log.Info("SIGHUP: reloading the configuration")
			r.reload(w, true, nil, "SIGHUP")
		case <-usr1:
			for _, f := range []*logfile.File{r.sessions, r.fail2ban} {
				if err := f.Reopen(); err != nil {
					r.log.Error("reopen log", slog.Any("error", err))
				}
			}
			r.log.Info("SIGUSR1: log files reopened")
		case ev := <-events:
			if !r.names[filepath.Clean(ev.Name)] || r.engine.Config().Server.ReloadOnSignal {
				continue
			}
			if !busy {
				busy = true
				limit.Reset(orDefault(r.patience, stableLimit))
			}
			gap.Stop()
			first = nil
			settle.Reset(orDefault(r.settle, reloadDelay))
		case <-settle.C:
			first = look(r.files())
			gap.Reset(orDefault(r.stable, stableGap))
		case <-gap.C:
			second := look(r.files())
			if !maps.Equal(first, second) {
				first = second // changed with no event we could see: look again
				gap.Reset(orDefault(r.stable, stableGap))
				continue
			}
			endBurst()
			r.changed(w, second)
		case <-limit.C:
			r.log.Warn("configuration files still changing; reloading without waiting for them to settle",
				slog.Duration("waited", orDefault(r.patience, stableLimit)))
			endBurst()
			r.changed(w, look(r.files()))
		case err := <-watchErrs:
			r.log.Warn("watching the configuration files", slog.Any("error", err))
		}
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// files returns the files of the running configuration.
func (r *reloader) files() []string {
	if files := r.engine.Config().Files; len(files) > 0 {
		return files
	}
	return []string{r.path}
}

// changed reloads automatically, on the files as they stand (now), unless
// they are what the running configuration read: an event on a watched
// name that changed nothing (a mode change, an editor's probe) is no
// reason to reload.
func (r *reloader) changed(w *fsnotify.Watcher, now snapshot) {
	if maps.Equal(now, r.applied) {
		r.log.Debug("configuration files touched but unchanged; no reload")
		return
	}
	var changed []string
	for f, st := range now {
		if r.applied[f] != st {
			changed = append(changed, f)
		}
	}
	for f := range r.applied {
		if _, ok := now[f]; !ok {
			changed = append(changed, f)
		}
	}
	slices.Sort(changed)
	trigger := strings.Join(changed, ", ")
	r.log.Info("configuration files changed: reloading", slog.String("changed", trigger))
	r.reload(w, false, now, trigger)
}

// watch watches the directories of every file the configuration read and
// of every symbolic link on the way to them (a directory watch sees a file
// replaced by rename, which a file watch loses, and a ConfigMap's ..data
// link swapped), and records those names as the ones whose events count.
// Directories already watched stay watched, so no event is lost while the
// set changes.
func (r *reloader) watch(w *fsnotify.Watcher, snap snapshot) {
	if w == nil {
		return
	}
	clear(r.names)
	dirs := map[string]bool{}
	for _, st := range snap {
		for _, name := range st.names() {
			r.names[name] = true
			dirs[filepath.Dir(name)] = true
		}
	}
	for _, d := range w.WatchList() {
		if !dirs[d] {
			w.Remove(d) // may be gone already (an old ConfigMap version)
		}
		delete(dirs, d)
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			r.log.Warn("cannot watch a configuration directory; reload with SIGHUP", slog.String("dir", d), slog.Any("error", err))
		}
	}
}

// reload loads the configuration anew and swaps it in when it is whole.
// force (SIGHUP) applies files that became empty. before holds the files'
// fingerprints taken before the load, nil to take them now.
func (r *reloader) reload(w *fsnotify.Watcher, force bool, before snapshot, trigger string) {
	tell(r.notify, r.log, notifyReloading())
	if before == nil && r.path != "" {
		before = look(r.files())
	}
	err := r.apply(force, before, trigger)
	r.watch(w, look(r.files())) // list files and links may have changed
	// Applied or refused, a configuration serves: ready again.
	tell(r.notify, r.log, notifyReady)
	if r.done != nil {
		r.done <- err
	}
}

// apply loads and swaps in the configuration; trigger says what asked
// for it ("SIGHUP", or the files that changed), for the log.
func (r *reloader) apply(force bool, before snapshot, trigger string) error {
	if r.path == "" {
		r.log.Warn("no configuration file (-c) to reload; still on the built-in defaults")
		return nil
	}
	cfg, err := rules.Load(r.path)
	if err != nil {
		r.counters.ConfigReload(false)
		var merr *multierror.Error
		if errors.As(err, &merr) {
			for _, e := range merr.Errors {
				r.log.Error("configuration error; the running configuration stays", slog.String("error", e.Error()))
			}
		} else {
			r.log.Error("configuration error; the running configuration stays", slog.String("error", err.Error()))
		}
		return err
	}
	filled, err := r.checkEmptied(cfg, force)
	if err != nil {
		return err
	}
	old := r.engine.Config()
	for _, key := range restartKeys(old, cfg) {
		r.log.Warn("setting changed but needs a restart to take effect", slog.String("key", key))
	}
	if d1, d2 := old.DNS, cfg.DNS; r.newDNS != nil && (d1.Resolver != d2.Resolver || d1.Timeout != d2.Timeout ||
		d1.MinTTL != d2.MinTTL || d1.MaxTTL != d2.MaxTTL || d1.CacheEntries != d2.CacheEntries) {
		// A new client, with an empty cache; probes start again.
		if err := r.newDNS(cfg); err != nil {
			r.log.Error("the new [dns] settings cannot be used; the running DNS client stays", slog.Any("error", err))
		} else {
			r.log.Info("DNS list client restarted with the new [dns] settings")
		}
	}
	if r.newDirectory != nil && directoryChanged(old, cfg) {
		// A new client, with an empty cache and a new pool.
		if err := r.newDirectory(cfg); err != nil {
			r.log.Error("the new [directory] settings cannot be used; the running directory client stays", slog.Any("error", err))
		} else if cfg.Directory.Enabled() {
			r.log.Info("directory client restarted with the new [directory] settings", slog.String("directory", cfg.Directory.String()))
		}
	}
	for _, warn := range cfg.Warnings {
		r.log.Warn("configuration: " + warn)
	}
	changes := rules.Diff(old, cfg)
	for _, c := range changes {
		attrs := []any{slog.String("key", c.Key)}
		if c.From != "" || c.To != "" {
			attrs = append(attrs, slog.String("from", c.From), slog.String("to", c.To))
		} else {
			attrs = append(attrs, slog.Int("added", len(c.Added)), slog.Int("removed", len(c.Removed)),
				slog.Int("before", c.Before), slog.Int("after", c.After))
			if len(c.Added) > 0 {
				attrs = append(attrs, slog.String("added_entries", firstEntries(c.Added)))
			}
			if len(c.Removed) > 0 {
				attrs = append(attrs, slog.String("removed_entries", firstEntries(c.Removed)))
			}
		}
		r.log.Info("configuration change", attrs...)
	}
	r.engine.SetConfig(cfg)
	if err := setCandidate(r.engine, cfg, r.log); err != nil {
		r.engine.SetCandidate(nil)
		r.log.Error("the candidate configuration has errors; no candidate until it is fixed", slog.Any("error", err))
	}
	r.remember(cfg, before, filled)
	tuneMemory(r.log) // the old configuration and the loading garbage
	r.level.Set(cfg.Log.Level)
	for _, f := range []struct {
		file *logfile.File
		path string
	}{{r.sessions, cfg.Log.Sessions}, {r.fail2ban, cfg.Log.Fail2ban}} {
		if err := f.file.SetPath(f.path); err != nil {
			r.log.Error("log file", slog.Any("error", err))
		}
	}
	r.counters.ConfigReload(true)
	r.log.Info("configuration reloaded", slog.String("file", r.path), slog.String("trigger", trigger), slog.Int("changes", len(changes)))
	return nil
}

// firstEntries lists up to 10 entries, quoted, for a log line.
func firstEntries(entries []string) string {
	const most = 10
	var b strings.Builder
	for i, e := range entries {
		if i == most {
			fmt.Fprintf(&b, " and %d more", len(entries)-most)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(e))
	}
	return b.String()
}

// checkEmptied refuses, unless force, a configuration whose file or one
// of whose list files had content when last applied and has none now (no
// byte, or only blank and comment lines: hasContent). Such a file is most
// likely being rewritten in place, and applying it would turn every
// control off or empty a list. A file that was empty and stays empty is
// fine. It returns which files have content, for the next reload.
func (r *reloader) checkEmptied(cfg *rules.Config, force bool) (map[string]bool, error) {
	filled := make(map[string]bool, len(cfg.Files))
	var emptied []string
	for _, f := range cfg.Files {
		f = filepath.Clean(f)
		filled[f] = hasContent(f)
		if r.filled[f] && !filled[f] {
			emptied = append(emptied, f)
		}
	}
	for _, f := range emptied {
		what := "list file"
		if f == filepath.Clean(r.path) {
			what = "configuration file"
		}
		if force {
			r.log.Warn(what+" is empty; applied as SIGHUP asked", slog.String("file", f))
			continue
		}
		r.log.Error(what+" became empty; the running configuration stays (send SIGHUP / systemctl reload to apply it if that is meant)",
			slog.String("file", f))
	}
	if len(emptied) > 0 && !force {
		r.counters.ConfigReload(false)
		return nil, fmt.Errorf("%w: %s (not applied without SIGHUP)", errEmptied, strings.Join(emptied, ", "))
	}
	return filled, nil
}

// remember records the files of the configuration just applied. A file
// also in before keeps the fingerprint taken before the load: if it
// changed while being loaded, the next look differs and reloads again,
// rather than a change being taken for what was applied.
func (r *reloader) remember(cfg *rules.Config, before snapshot, filled map[string]bool) {
	r.applied = make(snapshot, len(cfg.Files))
	for _, f := range cfg.Files {
		f = filepath.Clean(f)
		if st, ok := before[f]; ok {
			r.applied[f] = st
		} else {
			r.applied[f] = stateOf(f)
		}
	}
	r.filled = filled
}

// snapshot holds the fingerprints of the configuration's files, keyed by
// each file's name as the configuration gives it.
type snapshot map[string]fileState

// fileState is the fingerprint of one file the configuration read: the
// chain of names that leads to it (each symbolic link followed, then the
// file reached) and what stat says of the file reached. Equal states mean
// the file was left alone, as far as timestamps tell: a rewrite in place
// of the same size within one tick of the filesystem's clock goes unseen,
// which after stableGap only a filesystem with whole-second timestamps
// allows.
type fileState struct {
	chain    string // the names, separated by NUL (no name holds one)
	dev, ino uint64
	size     int64
	mtime    int64  // nanoseconds since the epoch
	err      string // why the file cannot be reached or read
}

// names returns the chain: every link, then the file.
func (s fileState) names() []string {
	if s.chain == "" {
		return nil
	}
	return strings.Split(s.chain, "\x00")
}

// look takes the fingerprints of files.
func look(files []string) snapshot {
	s := make(snapshot, len(files))
	for _, f := range files {
		s[filepath.Clean(f)] = stateOf(f)
	}
	return s
}

// stateOf takes the fingerprint of one file.
func stateOf(path string) fileState {
	chain, err := linkChain(path)
	st := fileState{chain: strings.Join(chain, "\x00")}
	if err != nil {
		st.err = err.Error()
		return st
	}
	fi, err := os.Stat(chain[len(chain)-1])
	if err != nil {
		st.err = err.Error()
		return st
	}
	st.size, st.mtime = fi.Size(), fi.ModTime().UnixNano()
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), uint64(sys.Ino) // Dev is 32 bits on some platforms
	}
	return st
}

// linkChain follows path one name at a time, as the kernel does, and
// returns every symbolic link met on the way, each as an absolute path
// through real directories only, and last the file reached (what
// filepath.EvalSymlinks returns). Watching the directories of these names
// sees every change of what path reads: the file edited or replaced, any
// link on the way repointed (a Kubernetes ConfigMap renames a new ..data
// link over the old one). When a name on the way is missing, the chain
// ends with it, so that its directory is watched for its return.
func linkChain(path string) ([]string, error) {
	abs := path // not filepath.Abs: cleaning "link/.." would skip the link
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", path, err)
		}
		abs = wd + "/" + path
	}
	var chain []string
	resolved := "/" // a real directory: no link in it
	rest := strings.Split(abs, "/")
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, name)
		fi, err := os.Lstat(next)
		if err != nil {
			return append(chain, next), fmt.Errorf("resolve %s: %w", path, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		chain = append(chain, next)
		if links++; links > maxLinks {
			return chain, fmt.Errorf("resolve %s: more than %d symbolic links", path, maxLinks)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return chain, fmt.Errorf("resolve %s: %w", path, err)
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return append(chain, resolved), nil
}

// hasContent reports whether the file at path holds anything but blank
// lines and lines whose first non-blank character is "#": a comment in
// TOML and in list files alike, so such a file sets nothing, the same as
// an empty one. A file that cannot be read counts as having content: the
// load that just read it would have failed otherwise.
func hasContent(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	br := bufio.NewReader(f)
	comment := false
	for {
		c, err := br.ReadByte()
		switch {
		case errors.Is(err, io.EOF):
			return false
		case err != nil:
			return true
		case c == '\n':
			comment = false
		case comment, c == ' ', c == '\t', c == '\r', c == '\v', c == '\f':
		case c == '#':
			comment = true
		default:
			return true
		}
	}
}

// restartKeys names the settings that differ and are only read at start:
// listeners and the log format.
func restartKeys(old, cfg *rules.Config) []string {
	var keys []string
	diff := func(key string, changed bool) {
		if changed {
			keys = append(keys, key)
		}
	}
	diff("server.policy", !equalStrings(old.Server.Policy, cfg.Server.Policy))
	diff("server.milter", !equalStrings(old.Server.Milter, cfg.Server.Milter))
	diff("server.metrics", old.Server.Metrics != cfg.Server.Metrics)
	diff("server.socket_mode", old.Server.SocketMode != cfg.Server.SocketMode)
	diff("log.format", old.Log.Format != cfg.Log.Format)
	diff("state", !reflect.DeepEqual(old.State, cfg.State))
	diff("admin.listen", old.Admin.Listen != cfg.Admin.Listen)
	diff("admin.token_file", old.Admin.Token != cfg.Admin.Token)
	return keys
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
