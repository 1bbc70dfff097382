package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-multierror"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// reloadDelay coalesces the events of one edit (an editor writes a
// temporary file, renames it over the old one, changes its mode...) into
// one reload.
const reloadDelay = 300 * time.Millisecond

// reloader keeps the running configuration in step with its files: it
// reloads when the configuration file or a list file changes, and on
// SIGHUP. A configuration with errors is not applied: the old one keeps
// serving, and each error is logged and counted.
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
	// done, when set, receives the result of each reload (tests).
	done chan<- error
}

// run watches until ctx is done. hup forces a reload; usr1 reopens the
// log files (after logrotate).
func (r *reloader) run(ctx context.Context, hup, usr1 <-chan struct{}) {
	var events chan fsnotify.Event
	var watchErrs chan error
	var w *fsnotify.Watcher
	watched := map[string]bool{} // files that trigger a reload
	if r.path != "" {
		var err error
		if w, err = fsnotify.NewWatcher(); err != nil {
			r.log.Error("cannot watch the configuration files; reload with SIGHUP", slog.Any("error", err))
		} else {
			defer w.Close()
			events, watchErrs = w.Events, w.Errors
			r.watch(w, watched)
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.log.Info("SIGHUP: reloading the configuration")
			r.reload(w, watched)
		case <-usr1:
			for _, f := range []*logfile.File{r.sessions, r.fail2ban} {
				if err := f.Reopen(); err != nil {
					r.log.Error("reopen log", slog.Any("error", err))
				}
			}
			r.log.Info("SIGUSR1: log files reopened")
		case ev := <-events:
			if watched[filepath.Clean(ev.Name)] {
				timer.Reset(reloadDelay)
			}
		case err := <-watchErrs:
			r.log.Warn("watching the configuration files", slog.Any("error", err))
		case <-timer.C:
			r.log.Info("configuration files changed: reloading")
			r.reload(w, watched)
		}
	}
}

// watch watches the directories of every file the configuration read (a
// directory watch sees a file replaced by rename, which a file watch
// loses), and records the files themselves. Directories already watched
// stay watched, so no event is lost while the set changes.
func (r *reloader) watch(w *fsnotify.Watcher, watched map[string]bool) {
	if w == nil {
		return
	}
	clear(watched)
	files := r.engine.Config().Files
	if len(files) == 0 {
		files = []string{r.path}
	}
	dirs := map[string]bool{}
	for _, f := range files {
		f = filepath.Clean(f)
		watched[f] = true
		dirs[filepath.Dir(f)] = true
	}
	for _, d := range w.WatchList() {
		if !dirs[d] {
			w.Remove(d)
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
func (r *reloader) reload(w *fsnotify.Watcher, watched map[string]bool) {
	err := r.apply()
	r.watch(w, watched) // list files may have been added or removed
	if r.done != nil {
		r.done <- err
	}
}

func (r *reloader) apply() error {
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
	for _, warn := range cfg.Warnings {
		r.log.Warn("configuration: " + warn)
	}
	r.engine.SetConfig(cfg)
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
	r.log.Info("configuration reloaded", slog.String("file", r.path))
	return nil
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
	diff("server.idle_timeout (milter)", old.Server.IdleTimeout != cfg.Server.IdleTimeout && len(cfg.Server.Milter) > 0)
	diff("log.format", old.Log.Format != cfg.Log.Format)
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
