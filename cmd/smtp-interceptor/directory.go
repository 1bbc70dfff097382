package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/directory"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// newDirectoryClient builds the [directory] client of a configuration,
// reporting into counters (nil: none); it returns nil with no
// [directory]. It does not connect: the first lookup does.
func newDirectoryClient(cfg *rules.Config, counters *rules.Counters, log *slog.Logger) (*directory.Client, error) {
	if !cfg.Directory.Enabled() {
		if counters != nil {
			counters.NoDirectory()
		}
		return nil, nil
	}
	o := directory.Options{Config: cfg.Directory, Logger: log}
	if counters != nil {
		o.Observe = counters.ObserveDirectoryLookup
		o.OnUp = counters.SetDirectoryUp
	}
	c, err := directory.New(o)
	if err != nil {
		return nil, fmt.Errorf("[directory]: %w", err)
	}
	if counters != nil {
		counters.SetDirectoryUp(true)
	}
	return c, nil
}

// directoryChanged reports whether a reload needs a new directory client:
// any [directory] key but those the engine reads from the configuration
// itself (domains, on_error).
func directoryChanged(old, cfg *rules.Config) bool {
	a, b := old.Directory, cfg.Directory
	a.Domains, b.Domains = nil, nil
	a.OnErrorAccept, b.OnErrorAccept = false, false
	return !reflect.DeepEqual(a, b)
}

// directoryClients holds the directory client in use, so that a reload's
// new client can replace it and the old one be closed.
type directoryClients struct {
	mu  sync.Mutex
	cur *directory.Client
}

// set makes c the client in use and closes the previous one. Lookups in
// flight on the old client fail and are tempfailed, never refused.
func (d *directoryClients) set(c *directory.Client) {
	d.mu.Lock()
	old := d.cur
	d.cur = c
	d.mu.Unlock()
	if old != nil && old != c {
		old.Close()
	}
}

// get returns the client in use, or nil.
func (d *directoryClients) get() *directory.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

func (d *directoryClients) close() { d.set(nil) }

// engineDirectory turns a client into the engine's Directory: a nil client
// must be a nil interface, not a typed nil.
func engineDirectory(c *directory.Client) rules.Directory {
	if c == nil {
		return nil
	}
	return c
}

// probeDirectory binds to the directory and searches for one address
// (addr; "" asks for postmaster in the first of [directory] domains),
// printing what it found. It exits 1 when the directory cannot answer;
// an address it does not know is an answer.
func probeDirectory(ctx context.Context, cfg *rules.Config, addr string, stdout, stderr io.Writer) int {
	d := &cfg.Directory
	if !d.Enabled() {
		fmt.Fprintln(stdout, "probe: no [directory]")
		return exitOK
	}
	if addr == "" {
		addr = "postmaster@" + d.Domains[0]
	}
	c, err := newDirectoryClient(cfg, nil, nil)
	if err != nil {
		fmt.Fprintf(stderr, "probe: %v\n", err)
		return exitFail
	}
	defer c.Close()
	start := time.Now()
	ans, err := c.Probe(ctx, addr)
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(stdout, "probe: directory %s: %s: error after %s: %v\n", d, addr, took, err)
		return exitFail
	}
	fmt.Fprintf(stdout, "probe: directory %s: %s: %s in %s\n", d, addr, ans.Result(), took)
	fmt.Fprintf(stdout, "probe:   filter %s\n", ans.Query)
	for _, en := range ans.Entries {
		kind := "entry"
		if en.Group {
			kind = "group"
		}
		fmt.Fprintf(stdout, "probe:   %s %s\n", kind, en.DN)
	}
	return exitOK
}
