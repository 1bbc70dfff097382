// Package console serves the web console of the admin listener ([admin]
// listen): server-rendered pages for the mail administrator (overview,
// statistics with charts, the session history and each session's decision
// trace, bans, list entries and an explain form) and the JSON API under
// /api/.
//
// Every page and API call needs a login (a user of [admin] users_file,
// kept in a session cookie) or the bearer token of [admin] token_file. A
// page asked without either redirects to /login, an API call gets 401.
// Every POST made with a session cookie carries the session's CSRF token.
// Pages are served with a strict Content-Security-Policy: no script at
// all (the charts are SVG drawn by the server), styles only from the
// embedded stylesheet, no request to any other host.
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/admin"
	"github.com/smtp-interceptor/smtp-interceptor/internal/history"
	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/webauth"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

//go:embed templates/*.html static/*
var embedded embed.FS

// The cookies: the login session, and the token that protects the login
// form itself. The __Host- prefix makes the browser keep them only when
// they are Secure, for this host alone and the whole path. Browsers treat
// http://127.0.0.1 and http://localhost as secure; any other plain-HTTP
// address gets no cookie, so a console reached from elsewhere needs TLS.
const (
	sessionCookie = "__Host-smtpi-session"
	loginCookie   = "__Host-smtpi-login"
)

// CSP is the Content-Security-Policy of every answer: nothing from
// another host, no script, styles and images only from the console.
const CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// csrfField is the form field (and X-CSRF-Token the header) that carries
// the CSRF token.
const csrfField = "csrf"

// Store is the session store the history pages read.
type Store interface {
	Query(ctx context.Context, f sessionstore.Filter) (sessionstore.Page, error)
	Get(ctx context.Context, id int64) (sessionstore.Entry, error)
}

// Users checks the logins of [admin] users_file.
type Users interface {
	Check(name, password string) bool
}

// Health is the state of what the server depends on, for the overview
// and /healthz.
type Health struct {
	// DNSResolverUp is false while the DNS resolver is marked down.
	DNSResolverUp bool `json:"dns_resolver_up"`
	// Store is the session store's counters; nil when it is off.
	Store *sessionstore.Stats `json:"session_store,omitempty"`
}

// Options configure New.
type Options struct {
	// Version is the build's version, shown in the overview.
	Version string
	// Started is when the server started.
	Started time.Time
	// Relay is this relay's name.
	Relay string
	// Engine is the running engine: its configuration and counters.
	Engine *rules.Engine
	// Backend holds the bans.
	Backend state.Backend
	// Store is the session store; nil turns the history pages into a note
	// that [log] store is off.
	Store Store
	// History is the per-minute history the charts draw; nil: no charts.
	History *history.History
	// Users are the console's logins; nil: nobody can log in (the bearer
	// token still works).
	Users Users
	// Token is the bearer token ([admin] token_file); "" accepts none.
	Token string
	// Stats returns what /stats of the metrics listener serves.
	Stats func() metrics.Stats
	// Health returns the state of the server's dependencies.
	Health func() Health
	// Explain runs a simulated session through the live configuration,
	// DNS lists, directory and bans (never the rate limits or
	// greylisting, which it would count).
	Explain func(ctx context.Context, s *rules.Session, tx rules.Transaction) rules.Explanation
	// Trace decides a recorded session again, for its history page.
	Trace func(ctx context.Context, r *rules.MessageRecord) rules.Explanation
	// TLS says the listener speaks HTTPS (the browser is then told to
	// keep to it).
	TLS bool
	// Logger receives logins, failed logins and changes.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Sessions and Limiter default to webauth's defaults.
	Sessions *webauth.Sessions
	Limiter  *webauth.Limiter
}

// Console is the web console's handler.
type Console struct {
	o        Options
	pages    map[string]*template.Template
	static   http.Handler
	api      http.Handler
	bearer   admin.Bearer
	sessions *webauth.Sessions
	limiter  *webauth.Limiter
	mux      *http.ServeMux
}

// New returns the console over o.
func New(o Options) (*Console, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Console{o: o, bearer: admin.NewBearer(o.Token), sessions: o.Sessions, limiter: o.Limiter}
	if c.sessions == nil {
		c.sessions = webauth.NewSessions(webauth.SessionsOptions{Now: o.Now})
	}
	if c.limiter == nil {
		c.limiter = webauth.NewLimiter(webauth.LimiterOptions{Now: o.Now})
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c.pages = pages
	static, err := fs.Sub(embedded, "static")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	c.static = http.StripPrefix("/static/", http.FileServerFS(static))
	c.api = admin.API(admin.Options{Backend: o.Backend, Token: o.Token, Relay: o.Relay, Logger: o.Logger, Now: o.Now})
	c.routes()
	return c, nil
}

// routes sets up the mux: the login and the assets are open, everything
// else goes through authorize.
func (c *Console) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /login", c.loginForm)
	m.HandleFunc("POST /login", c.login)
	m.Handle("GET /static/", c.static)
	page := func(pattern string, h func(http.ResponseWriter, *http.Request, *request)) {
		m.Handle(pattern, c.authorize(h))
	}
	page("POST /logout", c.logout)
	page("GET /{$}", c.overview)
	page("GET /stats", c.statsPage)
	page("GET /history", c.historyPage)
	page("GET /history/{id}", c.sessionPage)
	page("GET /bans", c.bansPage)
	page("POST /bans", c.addBan)
	page("POST /bans/remove", c.removeBan)
	page("GET /lists", c.listsPage)
	page("GET /explain", c.explainPage)
	page("GET /healthz", c.healthz)
	page("GET /api/history", c.apiHistory)
	page("GET /api/history/{id}", c.apiSession)
	page("GET /api/stats", c.apiStats)
	apiBans := func(w http.ResponseWriter, r *http.Request, _ *request) { c.api.ServeHTTP(w, r) }
	page("/api/bans", apiBans)
	page("/api/bans/", apiBans)
	page("/", c.notFound)
	c.mux = m
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if c.o.TLS {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// request is what authorize learnt about a request.
type request struct {
	// User is the logged-in user, or "token" for the bearer token.
	User string
	// Session is the login session; nil for the bearer token.
	Session *webauth.Session
}

// csrf is the request's CSRF token for the forms of its page.
func (q *request) csrf() string {
	if q.Session == nil {
		return ""
	}
	return q.Session.CSRF
}

// isAPI reports whether a request is for the JSON API (answered 401, not
// redirected).
func isAPI(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/healthz"
}

// authorize serves h to requests with the bearer token, or with a login
// session (and, for anything but GET and HEAD, its CSRF token).
func (c *Console) authorize(h func(http.ResponseWriter, *http.Request, *request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, present := c.bearer.Check(r); present {
			if !ok {
				c.o.Logger.Warn("console: wrong bearer token", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
				w.Header().Set("WWW-Authenticate", `Bearer realm="smtp-interceptor", error="invalid_token"`)
				writeJSONError(w, http.StatusUnauthorized, "wrong token")
				return
			}
			h(w, r, &request{User: "token"})
			return
		}
		var sess *webauth.Session
		if ck, err := r.Cookie(sessionCookie); err == nil {
			if s, ok := c.sessions.Get(ck.Value); ok {
				sess = &s
			}
		}
		if sess == nil {
			if isAPI(r) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="smtp-interceptor"`)
				writeJSONError(w, http.StatusUnauthorized, "log in at /login, or send Authorization: Bearer followed by the token of [admin] token_file")
				return
			}
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				http.Error(w, "Log in first: /login", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			tok := r.Header.Get("X-CSRF-Token")
			if tok == "" {
				r.Body = http.MaxBytesReader(w, r.Body, admin.MaxBodyBytes)
				tok = r.PostFormValue(csrfField)
			}
			if !c.sessions.ValidCSRF(*sess, tok) {
				c.o.Logger.Warn("console: POST without its CSRF token refused", "user", sess.User, "remote", r.RemoteAddr, "path", r.URL.Path)
				http.Error(w, "Forbidden: the form's CSRF token is missing or stale; reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r, &request{User: sess.User, Session: sess})
	})
}

// remoteIP is the address of the request's peer (no proxy header is
// trusted).
func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		a, _ := netip.ParseAddr(host)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// loginData is the login page's data.
type loginData struct {
	Next, User, Error, CSRF string
	NoUsers                 bool
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if _, ok := c.sessions.Get(ck.Value); ok {
			http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
			return
		}
	}
	c.renderLogin(w, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

// renderLogin shows the login form with a fresh login CSRF token (a
// cookie and the same value in the form: a site that cannot read our
// cookies cannot post the form).
func (c *Console) renderLogin(w http.ResponseWriter, status int, d loginData) {
	d.CSRF = randomToken()
	d.NoUsers = c.o.Users == nil
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: d.CSRF, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	c.render(w, status, "login", &page{Title: "Log in", Data: d})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	user := strings.TrimSpace(r.PostFormValue("username"))
	pass := r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	ck, err := r.Cookie(loginCookie)
	if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostFormValue(csrfField))) != 1 || ck.Value == "" {
		c.o.Logger.Warn("console: login without its CSRF token refused", "remote", r.RemoteAddr)
		c.renderLogin(w, http.StatusForbidden, loginData{Next: next, User: user, Error: "The login form expired. Try again."})
		return
	}
	ip := remoteIP(r)
	if ok, wait := c.limiter.Allow(ip, user); !ok {
		secs := int(wait.Round(time.Second) / time.Second)
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		c.o.Logger.Warn("console: login refused: too many failed attempts", "user", user, "remote", r.RemoteAddr)
		c.renderLogin(w, http.StatusTooManyRequests, loginData{Next: next, User: user,
			Error: fmt.Sprintf("Too many failed logins. Try again in %d seconds.", secs)})
		return
	}
	if c.o.Users == nil || user == "" || !c.o.Users.Check(user, pass) {
		c.limiter.Failure(ip, user)
		c.o.Logger.Warn("console: failed login", "user", user, "remote", r.RemoteAddr)
		c.renderLogin(w, http.StatusUnauthorized, loginData{Next: next, User: user, Error: "Wrong user name or password."})
		return
	}
	c.limiter.Success(ip, user)
	s := c.sessions.New(user)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.ID, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	c.o.Logger.Info("console: login", "user", user, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, q *request) {
	if q.Session != nil {
		c.sessions.Delete(q.Session.ID)
		c.o.Logger.Info("console: logout", "user", q.User, "remote", r.RemoteAddr)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a post-login redirect on this console: a path, never
// another host ("//evil", "https://evil", "/\evil").
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") ||
		strings.HasPrefix(next, "/login") {
		return "/"
	}
	return next
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request, q *request) {
	if isAPI(r) {
		writeJSONError(w, http.StatusNotFound, "no such route: "+r.URL.Path)
		return
	}
	c.render(w, http.StatusNotFound, "error", &page{Title: "Not found", User: q.User, CSRF: q.csrf(),
		Data: "There is no page at " + r.URL.Path + "."})
}

// page is what every template gets.
type page struct {
	Title, Nav string
	User, CSRF string
	Relay      string
	Version    string
	Data       any
}

// render executes a page's template; a failure is logged and answered
// 500 (the page may be half-written by then).
func (c *Console) render(w http.ResponseWriter, status int, name string, p *page) {
	t := c.pages[name]
	if t == nil {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	p.Relay, p.Version = c.o.Relay, c.o.Version
	if p.Nav == "" {
		p.Nav = name
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout", p); err != nil {
		c.o.Logger.Error("console: render page", "page", name, "error", err)
	}
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status, js = http.StatusInternalServerError, []byte(`{"error":"encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(js, '\n'))
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
