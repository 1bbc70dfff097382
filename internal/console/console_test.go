package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"golang.org/x/crypto/bcrypt"

	"github.com/smtp-interceptor/smtp-interceptor/internal/console"
	"github.com/smtp-interceptor/smtp-interceptor/internal/history"
	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/internal/webauth"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

const (
	testUser     = "admin"
	testPassword = "correct horse battery"
	testToken    = "0123456789abcdef0123456789abcdef"
)

// fixture is a console over a real engine, memory backend and session
// store, with one user.
type fixture struct {
	c     *console.Console
	store *sessionstore.Store
	back  *state.Memory
	eng   *rules.Engine
	now   *testutil.Clock
}

func newFixture(t *testing.T, configText string) *fixture {
	t.Helper()
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := webauth.AddUser(users, testUser, testPassword, bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	u, err := webauth.LoadUsers(users, webauth.UsersOptions{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rules.Parse("", configText)
	if err != nil {
		t.Fatal(err)
	}
	back, err := state.OpenMemory(state.MemoryOptions{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	st, err := sessionstore.Open(sessionstore.Options{Path: filepath.Join(dir, "sessions.db"), Logger: testutil.Logger(t), FlushEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng := rules.NewEngine(cfg, rules.EngineOptions{Counters: new(rules.Counters), Observer: st, Bans: bans{back}})
	clock := testutil.NewClock(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC))
	h := history.New(60)
	c, err := console.New(console.Options{Version: "test-1.2.3", Started: clock.Now().Add(-time.Hour), Relay: "relay-a",
		Engine: eng, Backend: back, Store: st, History: h, Users: u, Token: testToken, Logger: testutil.Logger(t), Now: clock.Now,
		Explain: func(ctx context.Context, s *rules.Session, tx rules.Transaction) rules.Explanation {
			return rules.NewEngine(eng.Config(), rules.EngineOptions{Counters: new(rules.Counters), Bans: bans{back}}).Explain(ctx, s, tx)
		},
		Trace: func(ctx context.Context, r *rules.MessageRecord) rules.Explanation {
			return rules.ExplainRecord(ctx, eng.Config(), r, nil)
		}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{c: c, store: st, back: back, eng: eng, now: clock}
}

// bans adapts the state backend to the engine, as serve does.
type bans struct{ b state.Backend }

func (x bans) Banned(ip netip.Addr) (rules.Ban, bool) {
	b, ok := x.b.Banned(ip)
	return rules.Ban{Prefix: b.Prefix, Reason: b.Reason, Creator: b.Creator}, ok
}

// browser keeps cookies the way a browser does for this host (the
// standard cookie jar keeps no Secure cookie over plain HTTP), and talks
// to the handler from one remote address.
type browser struct {
	t       *testing.T
	h       http.Handler
	remote  string
	cookies map[string]string
	token   string
}

func (f *fixture) browser(t *testing.T, remote string) *browser {
	return &browser{t: t, h: f.c, remote: remote, cookies: map[string]string{}}
}

func (b *browser) do(method, target string, form url.Values) *http.Response {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, target, body)
	req.RemoteAddr = b.remote
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range b.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, req)
	resp := rec.Result()
	for _, c := range resp.Cookies() {
		if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
			b.t.Errorf("cookie %s is not Secure, HttpOnly and SameSite=Strict", c.Name)
		}
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c.Value
		}
	}
	return resp
}

func bodyOf(t *testing.T, r *http.Response) string {
	t.Helper()
	data, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// otherHost finds a reference to another host in a page.
var otherHost = regexp.MustCompile(`(?i)(src|href|action|srcset|url)\s*[=(]\s*["']?(https?:)?//`)

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf returns the CSRF token of a page's first form.
func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

// login logs the browser in and returns the CSRF token of its session.
func (b *browser) login(user, password string) *http.Response {
	b.t.Helper()
	form := b.do("GET", "/login", nil)
	tok := csrfOf(b.t, bodyOf(b.t, form))
	return b.do("POST", "/login", url.Values{"username": {user}, "password": {password}, "csrf": {tok}, "next": {"/"}})
}

func (b *browser) loggedIn() string {
	b.t.Helper()
	r := b.login(testUser, testPassword)
	if r.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("login: %s", r.Status)
	}
	return csrfOf(b.t, bodyOf(b.t, b.do("GET", "/bans", nil)))
}

// routes are every route of the console, with the method it is used by.
var routes = []struct{ method, path string }{
	{"GET", "/"}, {"GET", "/stats"}, {"GET", "/history"}, {"GET", "/history?ip=192.0.2.1"}, {"GET", "/history/1"},
	{"GET", "/bans"}, {"POST", "/bans"}, {"POST", "/bans/remove"}, {"GET", "/lists"}, {"GET", "/explain"},
	{"GET", "/explain?ip=192.0.2.1"}, {"GET", "/healthz"}, {"POST", "/logout"},
	{"GET", "/api/bans"}, {"POST", "/api/bans"}, {"DELETE", "/api/bans/192.0.2.1"}, {"GET", "/api/history"},
	{"GET", "/api/history/1"}, {"GET", "/api/stats"}, {"GET", "/no-such-page"}, {"GET", "/api/no-such-call"},
}

func TestEveryRouteNeedsALogin(t *testing.T) {
	f := newFixture(t, "")
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			is := is.New(t)
			b := f.browser(t, "192.0.2.50:4000")
			var form url.Values
			if rt.method == "POST" {
				form = url.Values{"prefix": {"192.0.2.9"}}
			}
			r := b.do(rt.method, rt.path, form)
			api := strings.HasPrefix(rt.path, "/api/") || rt.path == "/healthz"
			switch {
			case api:
				is.Equal(r.StatusCode, http.StatusUnauthorized)
				is.True(strings.HasPrefix(r.Header.Get("Content-Type"), "application/json"))
			case rt.method == "GET":
				is.Equal(r.StatusCode, http.StatusSeeOther)
				is.Equal(r.Header.Get("Location"), "/login?next="+url.QueryEscape(rt.path))
			default:
				is.Equal(r.StatusCode, http.StatusUnauthorized)
			}
			is.Equal(len(f.back.Bans()), 0) // nothing was banned
		})
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	f := newFixture(t, "")
	b := f.browser(t, "192.0.2.50:4000")
	paths := []string{"/login", "/static/console.css", "/", "/api/bans", "/no-such-page"}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			is := is.New(t)
			r := b.do("GET", p, nil)
			is.Equal(r.Header.Get("Content-Security-Policy"), console.CSP)
			is.True(strings.Contains(console.CSP, "default-src 'none'"))
			is.True(!strings.Contains(console.CSP, "unsafe-inline"))
			is.Equal(r.Header.Get("X-Frame-Options"), "DENY")
			is.Equal(r.Header.Get("X-Content-Type-Options"), "nosniff")
		})
	}
}

func TestLoginThenEveryPage(t *testing.T) {
	f := newFixture(t, "[blacklist]\nhosts = [\"192.0.2.66\"]\n")
	b := f.browser(t, "192.0.2.50:4000")
	csrf := b.loggedIn()
	pages := []struct{ path, want string }{
		{"/", "test-1.2.3"},
		{"/stats", "SMTP.PrivateWL.TotalHits"},
		{"/history", "No session matches"},
		{"/bans", "No ban is in force"},
		{"/lists", "192.0.2.66"},
		{"/explain?ip=192.0.2.66&helo=mx.example&from=a%40example.com&rcpt=b%40example.org", "reject by blacklist"},
		{"/explain?ip=192.0.2.7", "accept"},
	}
	for _, p := range pages {
		t.Run(p.path, func(t *testing.T) {
			is := is.New(t)
			r := b.do("GET", p.path, nil)
			body := bodyOf(t, r)
			is.Equal(r.StatusCode, http.StatusOK)
			is.True(strings.Contains(body, p.want))
			is.True(strings.Contains(body, `value="`+csrf+`"`)) // the logout form
			is.True(!strings.Contains(body, "<script"))
			is.True(!otherHost.MatchString(body)) // nothing from another host: no CDN
		})
	}
	t.Run("logout", func(t *testing.T) {
		is := is.New(t)
		r := b.do("POST", "/logout", url.Values{"csrf": {csrf}})
		is.Equal(r.StatusCode, http.StatusSeeOther)
		r = b.do("GET", "/", nil)
		is.Equal(r.StatusCode, http.StatusSeeOther) // the session is gone
	})
}

func TestPostsNeedTheirCSRFToken(t *testing.T) {
	f := newFixture(t, "")
	b := f.browser(t, "192.0.2.50:4000")
	csrf := b.loggedIn()
	cases := []struct {
		name   string
		csrf   string
		header bool
		want   int
		banned int
	}{
		{"none", "", false, http.StatusForbidden, 0},
		{"wrong", "x" + csrf[1:], false, http.StatusForbidden, 0},
		{"another session's", "", false, http.StatusForbidden, 0},
		{"right, in the form", csrf, false, http.StatusSeeOther, 1},
		{"right, in X-CSRF-Token", csrf, true, http.StatusSeeOther, 1},
	}
	other := f.browser(t, "192.0.2.51:4000")
	cases[2].csrf = other.loggedIn()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			form := url.Values{"prefix": {"198.51.100.7"}, "reason": {"test"}}
			if !c.header && c.csrf != "" {
				form.Set("csrf", c.csrf)
			}
			req := httptest.NewRequest("POST", "/bans", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = b.remote
			for k, v := range b.cookies {
				req.AddCookie(&http.Cookie{Name: k, Value: v})
			}
			if c.header {
				req.Header.Set("X-CSRF-Token", c.csrf)
			}
			rec := httptest.NewRecorder()
			f.c.ServeHTTP(rec, req)
			is.Equal(rec.Code, c.want)
			is.Equal(len(f.back.Bans()), c.banned)
		})
	}
	t.Run("login form without its token", func(t *testing.T) {
		is := is.New(t)
		fresh := f.browser(t, "192.0.2.52:4000")
		r := fresh.do("POST", "/login", url.Values{"username": {testUser}, "password": {testPassword}})
		is.Equal(r.StatusCode, http.StatusForbidden)
		_, hasSession := fresh.cookies["__Host-smtpi-session"]
		is.True(!hasSession)
	})
}

func TestLoginRateLimit(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, "")
	attacker := f.browser(t, "203.0.113.9:5000")
	for i := range 5 {
		r := attacker.login(testUser, "wrong password "+string(rune('a'+i)))
		is.Equal(r.StatusCode, http.StatusUnauthorized)
	}
	// The sixth attempt is refused, even with the right password.
	r := attacker.login(testUser, testPassword)
	is.Equal(r.StatusCode, http.StatusTooManyRequests)
	is.True(r.Header.Get("Retry-After") != "")
	is.True(strings.Contains(bodyOf(t, r), "Too many failed logins"))
	_, hasSession := attacker.cookies["__Host-smtpi-session"]
	is.True(!hasSession)
	// Another address still logs in.
	r = f.browser(t, "192.0.2.50:4000").login(testUser, testPassword)
	is.Equal(r.StatusCode, http.StatusSeeOther)
	// After the window, the first address may try again.
	f.now.Advance(16 * time.Minute)
	r = attacker.login(testUser, testPassword)
	is.Equal(r.StatusCode, http.StatusSeeOther)
}

func TestBearerToken(t *testing.T) {
	f := newFixture(t, "")
	cases := []struct {
		name, token, method, path string
		want                      int
	}{
		{"api with the token", testToken, "GET", "/api/bans", http.StatusOK},
		{"page with the token", testToken, "GET", "/", http.StatusOK},
		{"healthz with the token", testToken, "GET", "/healthz", http.StatusOK},
		{"wrong token", "wrong-token-wrong-token", "GET", "/api/bans", http.StatusUnauthorized},
		{"wrong token on a page", "wrong-token-wrong-token", "GET", "/", http.StatusUnauthorized},
		{"ban with the token, no CSRF needed", testToken, "DELETE", "/api/bans/192.0.2.1", http.StatusNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			b := f.browser(t, "192.0.2.50:4000")
			b.token = c.token
			r := b.do(c.method, c.path, nil)
			is.Equal(r.StatusCode, c.want)
		})
	}
}

func TestNextStaysOnTheConsole(t *testing.T) {
	f := newFixture(t, "")
	cases := []struct{ next, want string }{
		{"/history?ip=192.0.2.1", "/history?ip=192.0.2.1"},
		{"//evil.example/", "/"},
		{"https://evil.example/", "/"},
		{"/\\evil.example", "/"},
		{"", "/"},
		{"/login", "/"},
	}
	for _, c := range cases {
		t.Run(c.next, func(t *testing.T) {
			is := is.New(t)
			b := f.browser(t, "192.0.2.50:4000")
			form := b.do("GET", "/login?next="+url.QueryEscape(c.next), nil)
			tok := csrfOf(t, bodyOf(t, form))
			r := b.do("POST", "/login", url.Values{"username": {testUser}, "password": {testPassword}, "csrf": {tok}, "next": {c.next}})
			is.Equal(r.StatusCode, http.StatusSeeOther)
			is.Equal(r.Header.Get("Location"), c.want)
		})
	}
}

// session runs one policy-like session through the engine: connect,
// HELO, MAIL FROM and one RCPT, then the end of the message.
func (f *fixture) session(t *testing.T, ip, from, rcpt string) {
	t.Helper()
	ctx := context.Background()
	s := rules.NewSession(netip.MustParseAddr(ip), "")
	s.ID = "T" + ip
	if v := f.eng.Connect(ctx, s); !v.Action.Refuses() {
		f.eng.Helo(ctx, s, "EHLO", "mx.example")
		if v := f.eng.Mail(ctx, s, from); !v.Action.Refuses() {
			f.eng.Rcpt(ctx, s, rcpt)
		}
	}
	f.eng.EndMessage(s)
}

func TestHistoryAndTrace(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, "[blacklist]\nhosts = [\"192.0.2.66\"]\n")
	f.session(t, "192.0.2.66", "spam@bad.example", "user@example.com")
	f.session(t, "192.0.2.7", "friend@good.example", "user@example.com")
	testutil.WaitFor(t, "two sessions stored", func() bool { return f.store.Stats().Written == 2 })
	b := f.browser(t, "192.0.2.50:4000")
	b.loggedIn()

	r := b.do("GET", "/history?ip=192.0.2.66", nil)
	page := bodyOf(t, r)
	is.Equal(r.StatusCode, http.StatusOK)
	is.True(strings.Contains(page, "192.0.2.66"))
	is.True(!strings.Contains(page, "friend@good.example")) // filtered out
	is.True(strings.Contains(page, "reject by blacklist"))
	id := regexp.MustCompile(`href="/history/(\d+)" class="session"`).FindStringSubmatch(page)
	is.True(id != nil)

	r = b.do("GET", "/history/"+id[1], nil)
	page = bodyOf(t, r)
	is.Equal(r.StatusCode, http.StatusOK)
	is.True(strings.Contains(page, `id="trace"`))
	is.True(strings.Contains(page, "<code>blacklist</code>: reject"))
	is.True(strings.Contains(page, "blacklist entry &#34;192.0.2.66&#34;")) // the trace names the entry that matched
	is.True(!strings.Contains(page, `id="differs"`))

	r = b.do("GET", "/history?verdict=nonsense", nil)
	is.Equal(r.StatusCode, http.StatusBadRequest)
	is.True(strings.Contains(bodyOf(t, r), "verdict"))
	r = b.do("GET", "/history/999999", nil)
	is.Equal(r.StatusCode, http.StatusNotFound)

	// The JSON API says the same.
	b.token = testToken
	r = b.do("GET", "/api/history?ip=192.0.2.66", nil)
	is.Equal(r.StatusCode, http.StatusOK)
	var got struct {
		Sessions []struct {
			ID       int64  `json:"id"`
			ClientIP string `json:"client_ip"`
			Control  string `json:"control"`
		} `json:"sessions"`
	}
	is.NoErr(json.NewDecoder(r.Body).Decode(&got))
	is.Equal(len(got.Sessions), 1)
	is.Equal(got.Sessions[0].ClientIP, "192.0.2.66")
	is.Equal(got.Sessions[0].Control, "blacklist")
}

func TestBansPage(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, "")
	b := f.browser(t, "192.0.2.50:4000")
	csrf := b.loggedIn()

	r := b.do("POST", "/bans", url.Values{"csrf": {csrf}, "prefix": {"198.51.100.0/24"}, "for": {"2h"}, "reason": {"spam run"}})
	is.Equal(r.StatusCode, http.StatusSeeOther)
	bans := f.back.Bans()
	is.Equal(len(bans), 1)
	is.Equal(bans[0].Prefix.String(), "198.51.100.0/24")
	is.Equal(bans[0].Creator, testUser+"@console")
	is.Equal(bans[0].Reason, "spam run")
	is.Equal(bans[0].Expires, f.now.Now().Add(2*time.Hour))
	// The engine refuses the banned network at once.
	v := f.eng.Connect(context.Background(), rules.NewSession(netip.MustParseAddr("198.51.100.20"), ""))
	is.Equal(v.Control, rules.ControlBans)

	page := bodyOf(t, b.do("GET", "/bans", nil))
	is.True(strings.Contains(page, "198.51.100.0/24"))
	is.True(strings.Contains(page, "spam run"))

	r = b.do("POST", "/bans", url.Values{"csrf": {csrf}, "prefix": {"0.0.0.0/0"}})
	is.Equal(r.StatusCode, http.StatusBadRequest)
	is.True(strings.Contains(bodyOf(t, r), "too wide"))
	r = b.do("POST", "/bans", url.Values{"csrf": {csrf}, "prefix": {"192.0.2.1"}, "for": {"soon"}})
	is.Equal(r.StatusCode, http.StatusBadRequest)

	r = b.do("POST", "/bans/remove", url.Values{"csrf": {csrf}, "prefix": {"198.51.100.0/24"}})
	is.Equal(r.StatusCode, http.StatusSeeOther)
	is.Equal(len(f.back.Bans()), 0)
	r = b.do("POST", "/bans/remove", url.Values{"csrf": {csrf}, "prefix": {"198.51.100.0/24"}})
	is.Equal(r.StatusCode, http.StatusNotFound)
}

func TestHostileValuesAreEscaped(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, "")
	evil := `<script>alert(1)</script>"onmouseover=x`
	f.session(t, "192.0.2.8", "a"+evil+"@x.example", "user@example.com")
	testutil.WaitFor(t, "the session stored", func() bool { return f.store.Stats().Written == 1 })
	b := f.browser(t, "192.0.2.50:4000")
	b.loggedIn()
	for _, p := range []string{"/history", "/history?from=" + url.QueryEscape(evil), "/explain?ip=192.0.2.8&helo=" + url.QueryEscape(evil)} {
		page := bodyOf(t, b.do("GET", p, nil))
		is.True(!strings.Contains(page, "<script>"))
		is.True(!strings.Contains(page, `"onmouseover`))
	}
}
