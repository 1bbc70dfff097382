package directory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
	"golang.org/x/sync/singleflight"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// The filters used when [rules.DirectoryConfig] leaves them empty.
const (
	// DefaultFilter finds an entry by its mail address or by any value of
	// cn, where Domino publishes alternate Internet addresses.
	DefaultFilter = rules.DefaultDirectoryFilter
	// DefaultGroupFilter says which entries found are groups: Domino's
	// groups and standard ones.
	DefaultGroupFilter = rules.DefaultDirectoryGroupFilter
)

// The defaults of the settings of [rules.DirectoryConfig] left zero.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultConnections = 4
	DefaultPositiveTTL = time.Hour
	DefaultNegativeTTL = 5 * time.Minute
)

// The bounds of the backoff after the directory was found unreachable.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// sizeLimit is the number of entries asked for: two are enough to say an
// address is ambiguous.
const sizeLimit = 2

// The errors of lookups that did not ask the server.
var (
	// ErrClosed is returned by the lookups of a closed Client.
	ErrClosed = errors.New("directory: client closed")
	// ErrUnreachable is wrapped by the errors of the lookups that fail at
	// once because the directory was found unreachable a moment ago; they
	// wrap the error that found it so too.
	ErrUnreachable = errors.New("directory: unreachable")
)

// Options configure a Client.
type Options struct {
	// Config is the [directory] section.
	Config rules.DirectoryConfig
	// Logger receives the reachability warnings; nil discards them.
	Logger *slog.Logger
	// Now is the clock of the cache's time-to-live; nil is time.Now.
	// (Timeouts and the backoff use the real clock.)
	Now func() time.Time
	// Observe, if set, is called once per LookupRecipient, when it
	// returns, with rules.DirectoryCached for a cache hit,
	// rules.DirectoryError for a failure, otherwise the answer's Result(),
	// and how long the lookup took. It must not block.
	Observe func(result rules.DirectoryResult, d time.Duration)
	// OnUp, if set, is called when the directory becomes unreachable
	// (false) and reachable again (true). It must not block.
	OnUp func(up bool)
}

// Client looks recipients up in the Domino Directory over LDAP. It is
// safe for concurrent use. It connects lazily: New does no network I/O.
type Client struct {
	cfg       rules.DirectoryConfig
	urls      []target
	filter    string
	group     matcher
	attrs     []string
	timeLimit int
	log       *slog.Logger
	now       func() time.Time
	customNow bool // Options.Now is set
	observe   func(rules.DirectoryResult, time.Duration)
	onUp      func(bool)

	cache          *cache // nil: off
	hits, misses   atomic.Uint64
	flight         singleflight.Group
	closed         atomic.Bool
	queries        atomic.Uint64 // searches sent, Probe excepted
	waiting        atomic.Int32  // lookups waiting for a shared query (tests)
	beforeSearchFn func()        // called before each search (tests)

	slots  chan struct{} // one per connection in use
	poolMu sync.Mutex
	idle   []*conn

	up       atomic.Bool
	stateMu  sync.Mutex
	failures int
	retryAt  time.Time
	lastErr  error
}

// target is one URL of the configuration, parsed.
type target struct {
	url      string
	scheme   string
	hostport string
	tls      *tls.Config // ldaps:// or StartTLS; nil: plain
	startTLS bool
}

// New checks o.Config and returns a client for it; it does not connect.
// Zero settings take their defaults: filter [DefaultFilter], group filter
// [DefaultGroupFilter], timeout 2s, 4 connections, positive TTL 1h,
// negative TTL 5m; CacheEntries 0 turns the cache off.
func New(o Options) (*Client, error) {
	cfg := o.Config
	if len(cfg.URLs) == 0 {
		return nil, errors.New("directory: no url")
	}
	if cfg.Filter == "" {
		cfg.Filter = DefaultFilter
	}
	if cfg.GroupFilter == "" {
		cfg.GroupFilter = DefaultGroupFilter
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Connections <= 0 {
		cfg.Connections = DefaultConnections
	}
	if cfg.PositiveTTL <= 0 {
		cfg.PositiveTTL = DefaultPositiveTTL
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	if cfg.CacheEntries < 0 {
		return nil, fmt.Errorf("directory: cache entries %d < 0", cfg.CacheEntries)
	}
	if _, err := ldap.ParseDN(cfg.BaseDN); err != nil {
		return nil, fmt.Errorf("directory: base dn %q: %w", cfg.BaseDN, err)
	}
	if cfg.BindDN != "" {
		if _, err := ldap.ParseDN(cfg.BindDN); err != nil {
			return nil, fmt.Errorf("directory: bind dn %q: %w", cfg.BindDN, err)
		}
	}
	if err := rules.CheckDirectoryFilter(cfg.Filter); err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	group, err := compileMatcher(cfg.GroupFilter)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	var roots *x509.CertPool
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("directory: ca file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("directory: ca file %s: no PEM certificate", cfg.CAFile)
		}
	}
	c := &Client{
		cfg:       cfg,
		filter:    cfg.Filter,
		group:     group,
		attrs:     group.attributes(),
		timeLimit: int((cfg.Timeout + time.Second - 1) / time.Second),
		log:       o.Logger,
		now:       o.Now,
		customNow: o.Now != nil,
		observe:   o.Observe,
		onUp:      o.OnUp,
		slots:     make(chan struct{}, cfg.Connections),
	}
	for _, raw := range cfg.URLs {
		t, err := parseTarget(raw, cfg.StartTLS, roots)
		if err != nil {
			return nil, fmt.Errorf("directory: %w", err)
		}
		c.urls = append(c.urls, t)
	}
	if len(c.attrs) == 0 {
		c.attrs = []string{"1.1"} // RFC 4511: no attributes
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if cfg.CacheEntries > 0 {
		c.cache = newCache(cfg.CacheEntries)
	}
	c.up.Store(true)
	return c, nil
}

func parseTarget(raw string, startTLS bool, roots *x509.CertPool) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("url %q: %w", raw, err)
	}
	t := target{url: raw, scheme: strings.ToLower(u.Scheme)}
	var port string
	switch t.scheme {
	case "ldap":
		port = "389"
		t.startTLS = startTLS
	case "ldaps":
		port = "636"
	default:
		return target{}, fmt.Errorf("url %q: not ldap:// or ldaps://", raw)
	}
	if u.Hostname() == "" {
		return target{}, fmt.Errorf("url %q: no host", raw)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	t.hostport = net.JoinHostPort(u.Hostname(), port)
	if t.scheme == "ldaps" || t.startTLS {
		t.tls = &tls.Config{ServerName: u.Hostname(), RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// backoff is how long lookups fail fast after the failures-th failure in
// a row to reach the directory.
func backoff(failures int) time.Duration {
	d := minBackoff
	for i := 1; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// String describes c without its password.
func (c *Client) String() string {
	var urls []string
	for _, t := range c.urls {
		urls = append(urls, t.url)
	}
	return fmt.Sprintf("directory.Client(%s)", strings.Join(urls, " "))
}

// LookupRecipient implements [rules.Directory]: it returns the entries
// whose address addr is, from the cache or from the server. addr is
// compared in lower case; an all-ASCII address of up to 256 bytes is
// looked up in the cache without allocating, whatever its case.
func (c *Client) LookupRecipient(ctx context.Context, addr string) (rules.DirectoryAnswer, error) {
	start := time.Now()
	if c.closed.Load() {
		c.report(rules.DirectoryError, start)
		return rules.DirectoryAnswer{}, ErrClosed
	}
	var (
		buf [256]byte
		key []byte // addr lowered into buf, if it had to be
		str string // or addr itself, lowered if it had to be
	)
	switch asciiCase(addr) {
	case isLower:
		str = addr
	case isASCII:
		if len(addr) <= len(buf) {
			key = buf[:len(addr)]
			for i := 0; i < len(addr); i++ {
				ch := addr[i]
				if 'A' <= ch && ch <= 'Z' {
					ch += 'a' - 'A'
				}
				key[i] = ch
			}
		} else {
			str = strings.ToLower(addr)
		}
	default:
		str = strings.ToLower(addr)
	}
	if c.cache != nil {
		var (
			ans rules.DirectoryAnswer
			ok  bool
			now = start // reading the clock is most of a hit's time
		)
		if c.customNow {
			now = c.now()
		}
		if key != nil {
			ans, ok = c.cache.getBytes(key, now)
		} else {
			ans, ok = c.cache.get(str, now)
		}
		if ok {
			c.hits.Add(1)
			c.report(rules.DirectoryCached, start)
			ans.Cached = true
			return ans, nil
		}
	}
	c.misses.Add(1)
	if key != nil {
		str = string(key)
	}
	ans, err := c.shared(ctx, str)
	if err != nil {
		c.report(rules.DirectoryError, start)
		return ans, err
	}
	c.report(ans.Result(), start)
	return ans, nil
}

func (c *Client) report(r rules.DirectoryResult, start time.Time) {
	if c.observe != nil {
		c.observe(r, time.Since(start))
	}
}

// The cases of an address's letters.
const (
	isLower = iota // ASCII without upper case
	isASCII        // ASCII with upper case
	isOther        // not ASCII
)

func asciiCase(s string) int {
	res := isLower
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch >= 0x80:
			return isOther
		case 'A' <= ch && ch <= 'Z':
			res = isASCII
		}
	}
	return res
}

// result is what a shared query returns to every caller waiting for it.
type result struct {
	ans rules.DirectoryAnswer
	err error
}

// shared asks the server about addr (lower case), once for all the callers
// asking at the same time, and caches the answer. The query runs in the
// first caller's goroutine (no goroutine, no stack to grow, per lookup),
// with its own timeout, which also bounds how long the others wait; a
// caller whose ctx is done sooner still waits for it.
func (c *Client) shared(ctx context.Context, addr string) (rules.DirectoryAnswer, error) {
	c.waiting.Add(1)
	defer c.waiting.Add(-1)
	run := func() (any, error) {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
		defer cancel()
		ans, err := c.query(qctx, addr)
		if err == nil && c.cache != nil {
			ttl := c.cfg.NegativeTTL
			if len(ans.Entries) > 0 {
				ttl = c.cfg.PositiveTTL
			}
			c.cache.put(addr, ans, c.now().Add(ttl))
		}
		return result{ans, err}, nil
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) >= c.cfg.Timeout {
		// The usual case (the servers give no deadline): the query's own
		// timeout comes first, so the caller may run it in its goroutine.
		v, _, _ := c.flight.Do(addr, run)
		res := v.(result)
		return res.ans, res.err
	}
	// A caller in more of a hurry than the timeout leaves on its own
	// deadline; the query goes on for the others.
	ch := c.flight.DoChan(addr, run)
	select {
	case r := <-ch:
		res := r.Val.(result)
		return res.ans, res.err
	case <-ctx.Done():
		return rules.DirectoryAnswer{Query: rules.ExpandDirectoryFilter(c.filter, addr)}, fmt.Errorf("directory: lookup %s: %w", addr, ctx.Err())
	}
}

// query runs one search for addr with the pool, within ctx.
func (c *Client) query(ctx context.Context, addr string) (rules.DirectoryAnswer, error) {
	ans := rules.DirectoryAnswer{Query: rules.ExpandDirectoryFilter(c.filter, addr)}
	if err := c.gate(); err != nil {
		return ans, err
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ans, fmt.Errorf("directory: lookup %s: waiting for a connection: %w", addr, ctx.Err())
	}
	defer func() { <-c.slots }()

	// dial connects a new connection; a failure is the lookup's.
	dial := func() (*conn, error) {
		cn, reachable, err := c.connect(ctx)
		if err != nil {
			c.failed(err, reachable)
			return nil, fmt.Errorf("directory: lookup %s: %w", addr, err)
		}
		return cn, nil
	}
	cn, reused := c.take()
	if cn == nil {
		var err error
		if cn, err = dial(); err != nil {
			return ans, err
		}
	}
	c.count()
	entries, err := c.search(ctx, cn, ans.Query)
	if err != nil && reused && !answered(err) && ctx.Err() == nil {
		// A pooled connection the server has closed since: try a new one.
		cn.close()
		var derr error
		if cn, derr = dial(); derr != nil {
			return ans, derr
		}
		c.count()
		entries, err = c.search(ctx, cn, ans.Query)
	}
	if err != nil {
		cn.close()
		c.failed(fmt.Errorf("%s: %w", cn.target.url, err), answered(err))
		return ans, fmt.Errorf("directory: lookup %s at %s: %w", addr, cn.target.url, err)
	}
	c.release(cn)
	c.reached(cn.target.url)
	ans.Entries = entries
	return ans, nil
}

// count counts a search of a lookup (and lets a test hold it).
func (c *Client) count() {
	if c.beforeSearchFn != nil {
		c.beforeSearchFn()
	}
	c.queries.Add(1)
}

// search sends the search for filter on cn and classifies what it found.
func (c *Client) search(ctx context.Context, cn *conn, filter string) ([]rules.DirectoryEntry, error) {
	req := ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		sizeLimit, c.timeLimit, false, filter, c.attrs, nil)
	var res *ldap.SearchResult
	err := cn.do(ctx, func(l *ldap.Conn) error {
		var err error
		res, err = l.Search(req)
		return err
	})
	if err != nil {
		// The server stopped at the size limit: more entries than asked
		// for, so the address is ambiguous.
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) || res == nil || len(res.Entries) < sizeLimit {
			return nil, fmt.Errorf("search: %w", err)
		}
	}
	if len(res.Entries) == 0 {
		return nil, nil
	}
	out := make([]rules.DirectoryEntry, len(res.Entries))
	for i, e := range res.Entries {
		out[i] = rules.DirectoryEntry{DN: e.DN, Group: c.group.match(e)}
	}
	return out, nil
}

// answered reports whether err is an LDAP result the server sent (it is
// reachable), not a failure to reach it or a time-out.
func answered(err error) bool {
	var le *ldap.Error
	return errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// gate fails fast while the directory is down and its backoff runs.
func (c *Client) gate() error {
	if c.up.Load() {
		return nil
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if wait := time.Until(c.retryAt); wait > 0 {
		return fmt.Errorf("%w, next attempt in %v: %w", ErrUnreachable, wait.Round(time.Millisecond), c.lastErr)
	}
	return nil
}

// failed records a failed lookup: when the server did not answer, the
// directory is down (one warning when it goes down) and the backoff grows.
func (c *Client) failed(err error, reachable bool) {
	if reachable {
		return
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	now := time.Now()
	if !c.up.Load() && now.Before(c.retryAt) {
		return // a lookup that started before the backoff
	}
	c.failures++
	c.retryAt = now.Add(backoff(c.failures))
	c.lastErr = err
	if c.up.Swap(false) {
		urls := make([]string, len(c.urls))
		for i, t := range c.urls {
			urls[i] = t.url
		}
		c.log.Warn("directory unreachable", "url", strings.Join(urls, " "), "error", err.Error())
		if c.onUp != nil {
			c.onUp(false)
		}
	}
}

// reached records a lookup answered by url.
func (c *Client) reached(url string) {
	if c.up.Load() {
		return
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	c.failures, c.retryAt, c.lastErr = 0, time.Time{}, nil
	if !c.up.Swap(true) {
		c.log.Warn("directory reachable again", "url", url)
		if c.onUp != nil {
			c.onUp(true)
		}
	}
}

// Up reports whether the directory is reachable: false from a lookup that
// could reach none of the URLs to the next one that succeeds.
func (c *Client) Up() bool { return c.up.Load() }

// Probe connects, binds and searches for addr once, bypassing the cache,
// the pool and the backoff, trying the URLs in order until one answers
// (check --probe). Reachability is not changed.
func (c *Client) Probe(ctx context.Context, addr string) (rules.DirectoryAnswer, error) {
	addr = strings.ToLower(addr)
	ans := rules.DirectoryAnswer{Query: rules.ExpandDirectoryFilter(c.filter, addr)}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var errs []error
	for i := range c.urls {
		t := &c.urls[i]
		cn, err := c.dial(ctx, t, time.Time{})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries, err := c.search(ctx, cn, ans.Query)
		cn.close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.url, err))
			continue
		}
		ans.Entries = entries
		return ans, nil
	}
	return ans, fmt.Errorf("directory: probe %s: %w", addr, errors.Join(errs...))
}

// CacheStats returns the number of answers cached, and how many lookups
// the cache answered (hits) and did not (misses, counted also when the
// cache is off).
func (c *Client) CacheStats() (entries int, hits, misses uint64) {
	if c.cache != nil {
		entries = c.cache.len()
	}
	return entries, c.hits.Load(), c.misses.Load()
}

// Close closes the idle connections; lookups after it fail with
// [ErrClosed], and connections in use are closed when they are done.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.poolMu.Lock()
	idle := c.idle
	c.idle = nil
	c.poolMu.Unlock()
	for _, cn := range idle {
		cn.close()
	}
	return nil
}
