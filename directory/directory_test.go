package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil/slapd"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// The DNs of domino.ldif.
const (
	alice = "cn=Alice Anders,ou=Sales,o=acme"
	bob   = "cn=Bob Berger,ou=Sales,o=acme"
	owen  = "cn=Owen O'Neil,ou=Sales,o=acme"
	dana  = "cn=Dana Dupont,ou=Sales,o=acme"
	dirk  = "cn=Dirk Dupont,o=acme"
	sales = "cn=Sales,o=acme"
	team  = "cn=Team,o=acme"
)

// recorder is a slog handler that keeps the records, for the tests of
// what is logged.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

func format(rec slog.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		return true
	})
	return b.String()
}

// count returns how many warnings msg were logged.
func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.Level == slog.LevelWarn && rec.Message == msg {
			n++
		}
	}
	return n
}

// text returns everything logged.
func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rec := range r.recs {
		b.WriteString(format(rec) + "\n")
	}
	return b.String()
}

// fixture is a client of a slapd serving domino.ldif, with what it
// observed.
type fixture struct {
	c   *Client
	s   *slapd.Server
	log *recorder

	mu      sync.Mutex
	results []rules.DirectoryResult
	ups     []bool
}

func (f *fixture) observed() []rules.DirectoryResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rules.DirectoryResult(nil), f.results...)
}

func (f *fixture) upCalls() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bool(nil), f.ups...)
}

// config is the configuration of the tests: bound as the relay user, a
// cache of 100.
func config(urls ...string) rules.DirectoryConfig {
	return rules.DirectoryConfig{
		URLs:         urls,
		BindDN:       slapd.BindDN,
		BindPassword: slapd.BindPassword,
		BaseDN:       "o=acme",
		Domains:      []string{"acme.example"},
		Timeout:      2 * time.Second,
		CacheEntries: 100,
	}
}

// newFixture makes a client of cfg (its URLs: s's if none) and options.
func newFixture(t testing.TB, s *slapd.Server, cfg rules.DirectoryConfig, opts Options) *fixture {
	t.Helper()
	f := &fixture{s: s, log: &recorder{}}
	// Printed only on failure: a lookup left running may log after the
	// test, when t.Log would panic.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", f.log.text())
		}
	})
	if len(cfg.URLs) == 0 {
		cfg.URLs = []string{s.URL()}
	}
	opts.Config = cfg
	opts.Logger = slog.New(f.log)
	if opts.Observe == nil {
		opts.Observe = func(r rules.DirectoryResult, _ time.Duration) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.results = append(f.results, r)
		}
	}
	opts.OnUp = func(up bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.ups = append(f.ups, up)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	f.c = c
	return f
}

func (f *fixture) lookup(addr string) (rules.DirectoryAnswer, error) {
	return f.c.LookupRecipient(context.Background(), addr)
}

func dns(a rules.DirectoryAnswer) []string {
	var out []string
	for _, e := range a.Entries {
		out = append(out, e.DN)
	}
	return out
}

func TestLookup(t *testing.T) {
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.CacheEntries = 0
	f := newFixture(t, s, cfg, Options{})
	tests := []struct {
		addr   string
		result rules.DirectoryResult
		dns    []string
		query  string
	}{
		{"alice@acme.example", rules.DirectoryFound, []string{alice},
			"(|(mail=alice@acme.example)(cn=alice@acme.example))"},
		{"a.anders@acme.example", rules.DirectoryFound, []string{alice}, ""},     // alternate address, a cn
		{"Alice.Anders@ACME.example", rules.DirectoryFound, []string{alice}, ""}, // a cn of other case
		{"ALICE@Acme.Example", rules.DirectoryFound, []string{alice},
			"(|(mail=alice@acme.example)(cn=alice@acme.example))"},
		{"bob@acme.example", rules.DirectoryFound, []string{bob}, ""},
		{"o'neil@acme.example", rules.DirectoryFound, []string{owen},
			"(|(mail=o'neil@acme.example)(cn=o'neil@acme.example))"},
		{"nobody@acme.example", rules.DirectoryUnknown, nil, ""},
		{"dup@acme.example", rules.DirectoryAmbiguous, []string{dana, dirk}, ""},
		{"sales@acme.example", rules.DirectoryGroup, []string{sales}, ""}, // dominoGroup
		{"team@acme.example", rules.DirectoryGroup, []string{team}, ""},   // groupOfNames
		{"a*)(uid=*@acme.example", rules.DirectoryUnknown, nil,
			`(|(mail=a\2a\29\28uid=\2a@acme.example)(cn=a\2a\29\28uid=\2a@acme.example))`},
		{"*@acme.example", rules.DirectoryUnknown, nil,
			`(|(mail=\2a@acme.example)(cn=\2a@acme.example))`},
		{"*", rules.DirectoryUnknown, nil, `(|(mail=\2a)(cn=\2a))`},
		{`\2a@acme.example`, rules.DirectoryUnknown, nil, ""},
		{"élise@acme.example", rules.DirectoryUnknown, nil,
			`(|(mail=\c3\a9lise@acme.example)(cn=\c3\a9lise@acme.example))`},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			is := is.New(t)
			a, err := f.lookup(tt.addr)
			is.NoErr(err)
			is.Equal(a.Result(), tt.result)
			is.Equal(dns(a), tt.dns)
			is.True(!a.Cached)
			if tt.query != "" {
				is.Equal(a.Query, tt.query)
			}
		})
	}
	is := is.New(t)
	is.Equal(f.c.queries.Load(), uint64(len(tests)))
	is.True(f.c.Up())
	is.Equal(f.log.text(), "")
}

func TestFilters(t *testing.T) {
	s := slapd.Start(t, slapd.Options{})
	tests := []struct {
		name, filter, group string
		addr                string
		result              rules.DirectoryResult
		dns                 []string
	}{
		{"local part", "(uid={local})", "", "aanders@elsewhere.example", rules.DirectoryFound, []string{alice}},
		{"local and domain", "(mail={local}@{domain})", "", "BOB@acme.example", rules.DirectoryFound, []string{bob}},
		// More than two entries: the server stops at the size limit, with
		// two, and that is ambiguous, not an error.
		{"size limit", "(&(objectClass=dominoPerson)(|(uid={local})(mail=*@{domain})))", "", "x@acme.example",
			rules.DirectoryAmbiguous, []string{alice, bob}},
		{"group by cn", "(mail={addr})", "(&(objectclass=DOMINOGROUP)(!(CN=sales)))", "sales@acme.example",
			rules.DirectoryFound, []string{sales}},
		{"group by presence", "(mail={addr})", "(member=*)", "team@acme.example", rules.DirectoryGroup, []string{team}},
		{"person is no group", "(mail={addr})", "(member=*)", "bob@acme.example", rules.DirectoryFound, []string{bob}},
		{"group by cn value", "(mail={addr})", "(cn=SALES-TEAM)", "sales@acme.example", rules.DirectoryGroup, []string{sales}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg := config()
			cfg.Filter, cfg.GroupFilter = tt.filter, tt.group
			f := newFixture(t, s, cfg, Options{})
			a, err := f.lookup(tt.addr)
			is.NoErr(err)
			is.Equal(a.Result(), tt.result)
			if tt.name != "size limit" {
				is.Equal(dns(a), tt.dns)
			} else {
				is.Equal(len(a.Entries), 2)
			}
		})
	}
}

func TestAnonymous(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.BindDN, cfg.BindPassword = "", ""
	f := newFixture(t, s, cfg, Options{})
	a, err := f.lookup("alice@acme.example")
	is.NoErr(err)
	is.Equal(dns(a), []string{alice})
}

func TestBindFailure(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.BindPassword = "wrong-password-42"
	f := newFixture(t, s, cfg, Options{})
	for range 3 {
		_, err := f.lookup("alice@acme.example")
		is.True(ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials)) // every lookup tries, none is cached
		is.True(!strings.Contains(err.Error(), "wrong-password-42"))
		is.True(strings.Contains(err.Error(), slapd.BindDN))
	}
	// The server answered: it is reachable, with no backoff.
	is.True(f.c.Up())
	is.Equal(f.log.count("directory unreachable"), 0)
	entries, hits, misses := f.c.CacheStats()
	is.Equal([]any{entries, hits, misses}, []any{0, uint64(0), uint64(3)})
	is.Equal(f.observed(), []rules.DirectoryResult{rules.DirectoryError, rules.DirectoryError, rules.DirectoryError})
	_, err := f.c.Probe(context.Background(), "alice@acme.example")
	is.True(err != nil)
	is.True(!strings.Contains(err.Error(), "wrong-password-42"))
	is.True(!strings.Contains(fmt.Sprint(f.c), "wrong-password-42"))
	is.True(!strings.Contains(f.log.text(), "wrong-password-42"))
}

func TestDownAndBack(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.CacheEntries = 0
	f := newFixture(t, s, cfg, Options{})
	_, err := f.lookup("alice@acme.example")
	is.NoErr(err)

	s.Stop()
	start := time.Now()
	_, err = f.lookup("alice@acme.example")
	is.True(err != nil)
	is.True(time.Since(start) < 10*cfg.Timeout) // refused: returned, no hang
	is.True(!f.c.Up())
	// The next lookups fail at once while the backoff runs.
	testutil.WaitFor(t, "a lookup failing fast", func() bool {
		_, err := f.lookup("bob@acme.example")
		is.True(err != nil)
		return errors.Is(err, ErrUnreachable)
	})
	is.Equal(f.log.count("directory unreachable"), 1)
	is.Equal(f.upCalls(), []bool{false})

	s.Restart()
	testutil.WaitFor(t, "lookups working again", func() bool {
		_, err := f.lookup("alice@acme.example")
		return err == nil
	})
	is.True(f.c.Up())
	is.Equal(f.log.count("directory unreachable"), 1)
	is.Equal(f.log.count("directory reachable again"), 1)
	is.Equal(f.upCalls(), []bool{false, true})
	a, err := f.lookup("bob@acme.example")
	is.NoErr(err)
	is.Equal(dns(a), []string{bob})
	is.True(strings.Contains(f.log.text(), s.URL()))
}

// TestStalePool: connections of the pool that the server closed (it
// restarted) are replaced, without an error or a warning.
func TestStalePool(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.CacheEntries, cfg.Connections = 0, 1
	f := newFixture(t, s, cfg, Options{})
	_, err := f.lookup("alice@acme.example")
	is.NoErr(err)
	f.c.poolMu.Lock()
	first := f.c.idle[0]
	f.c.poolMu.Unlock()
	_, err = f.lookup("bob@acme.example")
	is.NoErr(err)
	f.c.poolMu.Lock()
	is.Equal(len(f.c.idle), 1)
	is.True(f.c.idle[0] == first) // reused
	f.c.poolMu.Unlock()

	s.Restart()
	_, err = f.lookup("alice@acme.example")
	is.NoErr(err)
	is.True(f.c.Up())
	is.Equal(f.log.text(), "")
	f.c.poolMu.Lock()
	is.True(f.c.idle[0] != first) // replaced
	f.c.poolMu.Unlock()
}

func TestBlackhole(t *testing.T) {
	caFile, _ := slapd.TestCertificates(t)
	tests := []struct {
		name string
		cfg  func(*rules.DirectoryConfig)
	}{
		{"bind", func(*rules.DirectoryConfig) {}},
		{"anonymous search", func(c *rules.DirectoryConfig) { c.BindDN, c.BindPassword = "", "" }},
		{"starttls", func(c *rules.DirectoryConfig) { c.StartTLS, c.CAFile = true, caFile }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg := config(slapd.Blackhole(t))
			cfg.Timeout = 300 * time.Millisecond
			tt.cfg(&cfg)
			f := newFixture(t, nil, cfg, Options{})
			start := time.Now()
			_, err := f.lookup("alice@acme.example")
			is.True(errors.Is(err, context.DeadlineExceeded)) // returned with a time-out
			is.True(time.Since(start) < 10*cfg.Timeout)
			is.True(!f.c.Up())
			is.Equal(f.log.count("directory unreachable"), 1)
			is.Equal(f.observed(), []rules.DirectoryResult{rules.DirectoryError})
		})
	}
}

// TestCallerContext: a caller's deadline shorter than the timeout ends
// its lookup.
func TestCallerContext(t *testing.T) {
	is := is.New(t)
	cfg := config(slapd.Blackhole(t))
	cfg.Timeout = 20 * time.Second
	f := newFixture(t, nil, cfg, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.c.LookupRecipient(ctx, "alice@acme.example")
	is.True(errors.Is(err, context.DeadlineExceeded))
	is.True(time.Since(start) < cfg.Timeout/2)
}

func TestCache(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	f := newFixture(t, s, config(), Options{})

	a, err := f.lookup("alice@acme.example")
	is.NoErr(err)
	is.True(!a.Cached)
	b, err := f.lookup("ALICE@acme.example")
	is.NoErr(err)
	is.True(b.Cached)
	is.Equal(b.Query, a.Query)
	is.Equal(b.Entries, a.Entries)
	is.Equal(f.c.queries.Load(), uint64(1)) // no second query

	// Negative caching.
	_, err = f.lookup("nobody@acme.example")
	is.NoErr(err)
	n, err := f.lookup("nobody@acme.example")
	is.NoErr(err)
	is.True(n.Cached)
	is.Equal(n.Result(), rules.DirectoryUnknown)
	is.Equal(f.c.queries.Load(), uint64(2))

	is.Equal(f.observed(), []rules.DirectoryResult{
		rules.DirectoryFound, rules.DirectoryCached, rules.DirectoryUnknown, rules.DirectoryCached})
	entries, hits, misses := f.c.CacheStats()
	is.Equal([]any{entries, hits, misses}, []any{2, uint64(2), uint64(2)})

	// Errors are not cached.
	s.Stop()
	for range 2 {
		_, err = f.lookup("bob@acme.example")
		is.True(err != nil)
	}
	entries, _, _ = f.c.CacheStats()
	is.Equal(entries, 2)
	s.Restart()
	testutil.WaitFor(t, "bob found", func() bool {
		a, err := f.lookup("bob@acme.example")
		return err == nil && !a.Cached && len(a.Entries) == 1
	})
	// Cached answers are served while the directory is down.
	s.Stop()
	a, err = f.lookup("alice@acme.example")
	is.NoErr(err)
	is.True(a.Cached)
}

func TestCacheTTL(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	advance := func(d time.Duration) { clock.Add(int64(d)) }
	cfg := config()
	cfg.PositiveTTL, cfg.NegativeTTL = time.Hour, 5*time.Minute
	f := newFixture(t, s, cfg, Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	cached := func(addr string) bool {
		a, err := f.lookup(addr)
		is.NoErr(err)
		return a.Cached
	}
	is.True(!cached("alice@acme.example"))
	is.True(!cached("nobody@acme.example"))
	advance(4 * time.Minute)
	is.True(cached("alice@acme.example"))
	is.True(cached("nobody@acme.example"))
	advance(2 * time.Minute) // 6m
	is.True(cached("alice@acme.example"))
	is.True(!cached("nobody@acme.example")) // negative TTL over, asked again
	advance(55 * time.Minute)               // 61m
	is.True(!cached("alice@acme.example"))  // positive TTL over
	is.True(cached("alice@acme.example"))
	is.Equal(f.c.queries.Load(), uint64(4))
}

func TestCacheLRU(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.CacheEntries = 2
	f := newFixture(t, s, cfg, Options{})
	cached := func(addr string) bool {
		a, err := f.lookup(addr)
		is.NoErr(err)
		return a.Cached
	}
	is.True(!cached("alice@acme.example"))
	is.True(!cached("bob@acme.example"))
	is.True(cached("alice@acme.example")) // alice used last
	is.True(!cached("team@acme.example")) // evicts bob
	is.True(cached("alice@acme.example")) // order: alice, team
	is.True(!cached("bob@acme.example"))  // evicts team
	is.True(!cached("team@acme.example")) // evicts alice
	is.True(cached("bob@acme.example"))
	entries, _, _ := f.c.CacheStats()
	is.Equal(entries, 2)
}

func TestCacheHitAllocs(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	var n atomic.Int64
	f := newFixture(t, s, config(), Options{Observe: func(rules.DirectoryResult, time.Duration) { n.Add(1) }})
	_, err := f.lookup("alice@acme.example")
	is.NoErr(err)
	ctx := context.Background()
	for _, addr := range []string{"alice@acme.example", "Alice@ACME.example"} {
		allocs := testing.AllocsPerRun(1000, func() {
			a, err := f.c.LookupRecipient(ctx, addr)
			if err != nil || !a.Cached {
				t.Fatalf("%s: not a cache hit: %v", addr, err)
			}
		})
		is.Equal(allocs, float64(0)) // a hit allocates nothing
	}
	is.True(n.Load() > 2000)
}

func TestSingleflight(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.CacheEntries = 0 // the shared query, not the cache, answers them
	f := newFixture(t, s, cfg, Options{})
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	f.c.beforeSearchFn = func() { <-release }

	const n = 10
	var wg sync.WaitGroup
	answers := make([]rules.DirectoryAnswer, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			answers[i], errs[i] = f.lookup("Bob@acme.example")
		})
	}
	testutil.WaitFor(t, "all lookups waiting", func() bool { return f.c.waiting.Load() == n })
	open()
	wg.Wait()
	is.Equal(f.c.queries.Load(), uint64(1))
	for i := range n {
		is.NoErr(errs[i])
		is.Equal(dns(answers[i]), []string{bob})
	}
	is.Equal(len(f.observed()), n)
}

func TestFailover(t *testing.T) {
	s := slapd.Start(t, slapd.Options{})
	tests := []struct {
		name  string
		first string
	}{
		{"refused", slapd.DeadURL(t)},
		// The first URL gets half the timeout; the second the rest.
		{"hung", slapd.Blackhole(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg := config(tt.first, s.URL())
			cfg.Timeout = 4 * time.Second
			f := newFixture(t, s, cfg, Options{})
			a, err := f.lookup("alice@acme.example")
			is.NoErr(err)
			is.Equal(dns(a), []string{alice})
			a, err = f.lookup("bob@acme.example")
			is.NoErr(err)
			is.Equal(dns(a), []string{bob})
			is.True(f.c.Up())
			is.Equal(f.log.text(), "")
		})
	}
	is := is.New(t)
	f := newFixture(t, s, config(slapd.DeadURL(t), slapd.DeadURL(t)), Options{})
	_, err := f.lookup("alice@acme.example")
	is.True(err != nil)
	is.Equal(strings.Count(err.Error(), "/: connect: dial"), 2) // both tried
	is.Equal(f.log.count("directory unreachable"), 1)
}

func TestPool(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	cfg := config()
	cfg.CacheEntries, cfg.Connections = 0, 2
	f := newFixture(t, s, cfg, Options{})
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 20 {
		addr := []string{"alice@acme.example", "bob@acme.example", "nobody@acme.example", "dup@acme.example"}[i%4]
		wg.Go(func() {
			if _, err := f.lookup(fmt.Sprintf("%d%s", i/4, addr)); err != nil {
				t.Log(err)
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	is.Equal(failed.Load(), int32(0))
	f.c.poolMu.Lock()
	is.True(len(f.c.idle) >= 1 && len(f.c.idle) <= 2)
	f.c.poolMu.Unlock()

	is.NoErr(f.c.Close())
	_, err := f.lookup("alice@acme.example")
	is.True(errors.Is(err, ErrClosed))
	f.c.poolMu.Lock()
	is.Equal(len(f.c.idle), 0)
	f.c.poolMu.Unlock()
	is.NoErr(f.c.Close()) // twice
}

func TestTLS(t *testing.T) {
	caFile, files := slapd.TestCertificates(t)
	s := slapd.Start(t, slapd.Options{TLS: files})
	tests := []struct {
		name     string
		url      string
		startTLS bool
		caFile   string
		tls      bool
		fails    bool
	}{
		{"plain", s.URL(), false, "", false, false},
		{"starttls", s.URL(), true, caFile, true, false},
		{"ldaps", s.LDAPSURL(), false, caFile, true, false},
		{"starttls untrusted", s.URL(), true, "", false, true},
		{"ldaps untrusted", s.LDAPSURL(), false, "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg := config(tt.url)
			cfg.StartTLS, cfg.CAFile = tt.startTLS, tt.caFile
			f := newFixture(t, s, cfg, Options{})
			a, err := f.lookup("alice@acme.example")
			if tt.fails {
				is.True(err != nil)
				is.True(strings.Contains(err.Error(), "certificate"))
				return
			}
			is.NoErr(err)
			is.Equal(dns(a), []string{alice})
			f.c.poolMu.Lock()
			defer f.c.poolMu.Unlock()
			_, ok := f.c.idle[0].l.TLSConnectionState()
			is.Equal(ok, tt.tls)
		})
	}
}

func TestProbe(t *testing.T) {
	is := is.New(t)
	s := slapd.Start(t, slapd.Options{})
	f := newFixture(t, s, config(slapd.DeadURL(t), s.URL()), Options{})
	for range 2 {
		a, err := f.c.Probe(context.Background(), "ALICE@acme.example")
		is.NoErr(err)
		is.Equal(dns(a), []string{alice})
		is.True(!a.Cached)
		is.Equal(a.Query, "(|(mail=alice@acme.example)(cn=alice@acme.example))")
	}
	a, err := f.c.Probe(context.Background(), "sales@acme.example")
	is.NoErr(err)
	is.Equal(a.Result(), rules.DirectoryGroup)
	entries, hits, misses := f.c.CacheStats()
	is.Equal([]any{entries, hits, misses}, []any{0, uint64(0), uint64(0)}) // bypasses the cache
	is.Equal(f.c.queries.Load(), uint64(0))
	f.c.poolMu.Lock()
	is.Equal(len(f.c.idle), 0) // and the pool
	f.c.poolMu.Unlock()
	is.Equal(len(f.observed()), 0)

	dead := newFixture(t, s, config(slapd.DeadURL(t)), Options{})
	_, err = dead.c.Probe(context.Background(), "alice@acme.example")
	is.True(err != nil)
	is.True(dead.c.Up()) // a probe does not change reachability
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  func(*rules.DirectoryConfig)
		err  string // "": no error
	}{
		{"defaults", func(*rules.DirectoryConfig) {}, ""},
		{"two urls", func(c *rules.DirectoryConfig) { c.URLs = append(c.URLs, "ldaps://[::1]:6360") }, ""},
		{"no url", func(c *rules.DirectoryConfig) { c.URLs = nil }, "no url"},
		{"http", func(c *rules.DirectoryConfig) { c.URLs = []string{"http://domino.acme.example"} }, "not ldap"},
		{"no host", func(c *rules.DirectoryConfig) { c.URLs = []string{"ldap://"} }, "no host"},
		{"bad url", func(c *rules.DirectoryConfig) { c.URLs = []string{"ldap://a b/%zz"} }, "url"},
		{"filter without address", func(c *rules.DirectoryConfig) { c.Filter = "(mail=alice@acme.example)" }, "address"},
		{"filter unbalanced", func(c *rules.DirectoryConfig) { c.Filter = "(mail={addr}" }, "filter"},
		{"filter garbage", func(c *rules.DirectoryConfig) { c.Filter = "mail={addr}" }, "filter"},
		{"group substring", func(c *rules.DirectoryConfig) { c.GroupFilter = "(cn=*group*)" }, "substrings"},
		{"group ge", func(c *rules.DirectoryConfig) { c.GroupFilter = "(|(objectClass=dominoGroup)(uid>=a))" }, "greater"},
		{"group approx", func(c *rules.DirectoryConfig) { c.GroupFilter = "(cn~=sales)" }, "approx"},
		{"group extensible", func(c *rules.DirectoryConfig) { c.GroupFilter = "(cn:caseExactMatch:=Sales)" }, "extensible"},
		{"group garbage", func(c *rules.DirectoryConfig) { c.GroupFilter = "objectClass=dominoGroup" }, "group filter"},
		{"ca missing", func(c *rules.DirectoryConfig) { c.CAFile = filepath.Join(dir, "missing.pem") }, "ca file"},
		{"ca not pem", func(c *rules.DirectoryConfig) { c.CAFile = notPEM }, "no PEM"},
		{"cache negative", func(c *rules.DirectoryConfig) { c.CacheEntries = -1 }, "cache"},
		{"base dn", func(c *rules.DirectoryConfig) { c.BaseDN = "acme" }, "base dn"},
		{"bind dn", func(c *rules.DirectoryConfig) { c.BindDN = "relay" }, "bind dn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg := rules.DirectoryConfig{URLs: []string{"ldap://domino.acme.example"}}
			tt.cfg(&cfg)
			c, err := New(Options{Config: cfg})
			if tt.err != "" {
				is.True(err != nil)
				is.True(strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.err))) // the error says what
				return
			}
			is.NoErr(err)
			is.Equal(c.cfg.Timeout, 2*time.Second)
			is.Equal(c.cfg.Connections, 4)
			is.Equal(c.cfg.PositiveTTL, time.Hour)
			is.Equal(c.cfg.NegativeTTL, 5*time.Minute)
			is.Equal(c.filter, DefaultFilter)
			is.Equal(c.attrs, []string{"objectClass"})
			is.Equal(c.timeLimit, 2)
			is.Equal(c.cache, (*cache)(nil))
			is.Equal(c.urls[0].hostport, "domino.acme.example:389")
			is.True(c.Up())
			is.NoErr(c.Close())
		})
	}
}

func TestMatcher(t *testing.T) {
	group := ldap.NewEntry("cn=g,o=acme", map[string][]string{
		"objectClass": {"top", "dominoGroup"},
		"CN":          {"Sales", "sales-team"},
		"member":      {"cn=a,o=acme"},
	})
	person := ldap.NewEntry("cn=p,o=acme", map[string][]string{
		"objectclass": {"top", "person", "inetOrgPerson", "dominoPerson"},
		"cn":          {"Alice"},
		"member":      {},
	})
	tests := []struct {
		filter        string
		group, person bool
		attrs         []string
	}{
		{DefaultGroupFilter, true, false, []string{"objectClass"}},
		{"(objectClass=DOMINOGROUP)", true, false, []string{"objectClass"}},
		{"(OBJECTCLASS=dominoperson)", false, true, []string{"OBJECTCLASS"}},
		{"(member=*)", true, false, []string{"member"}}, // no values is absent
		{"(!(member=*))", false, true, []string{"member"}},
		{"(&(objectClass=top)(cn=sales-team))", true, false, []string{"objectClass", "cn"}},
		{"(|(cn=alice)(Cn=nobody)(objectclass=x))", false, true, []string{"cn", "objectclass"}},
		{"(&(objectClass=*)(!(|(cn=sales)(cn=alice))))", false, false, []string{"objectClass", "cn"}},
		{`(cn=sales\2dteam)`, true, false, []string{"cn"}},
		{"(mail=*)", false, false, []string{"mail"}},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			is := is.New(t)
			m, err := compileMatcher(tt.filter)
			is.NoErr(err)
			is.Equal(m.match(group), tt.group)
			is.Equal(m.match(person), tt.person)
			is.Equal(m.attributes(), tt.attrs)
		})
	}
}

func TestBackoff(t *testing.T) {
	is := is.New(t)
	var got []time.Duration
	for i := 1; i <= 8; i++ {
		got = append(got, backoff(i))
	}
	ms := time.Millisecond
	is.Equal(got, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms})
}

func BenchmarkCacheHit(b *testing.B) {
	s := slapd.Start(b, slapd.Options{})
	f := newFixture(b, s, config(), Options{Observe: func(rules.DirectoryResult, time.Duration) {}})
	if _, err := f.lookup("alice@acme.example"); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if a, err := f.c.LookupRecipient(ctx, "alice@acme.example"); err != nil || !a.Cached {
			b.Fatalf("not a cache hit: %v", err)
		}
	}
}

func BenchmarkLookupCold(b *testing.B) {
	s := slapd.Start(b, slapd.Options{})
	cfg := config()
	cfg.CacheEntries = 0
	f := newFixture(b, s, cfg, Options{Observe: func(rules.DirectoryResult, time.Duration) {}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if a, err := f.c.LookupRecipient(ctx, "alice@acme.example"); err != nil || len(a.Entries) != 1 {
			b.Fatalf("lookup: %v", err)
		}
	}
}
