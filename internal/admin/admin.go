// Package admin serves the HTTP API that manages the dynamic bans of a
// relay's state backend ([admin] in the configuration), and holds the
// client that the ban, unban and bans commands use to reach it.
//
// The API is three routes, each behind a bearer token:
//
//	GET    /api/bans          the bans in force, as a JSON array
//	POST   /api/bans          add (or replace) a ban: {"prefix", "for", "reason", "creator"}
//	DELETE /api/bans/{cidr}   remove the ban on exactly that prefix
//
// A request without "Authorization: Bearer TOKEN" is answered 401, and
// with no token configured every request is answered 403. Errors are
// JSON objects {"error": "..."}, with "field" naming the offending field
// of a refused ban.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// MaxBodyBytes bounds a request body; a larger one is answered 413.
const MaxBodyBytes = 1 << 20

// The longest reason and creator a ban may carry, in bytes.
const (
	MaxReason  = 1000
	MaxCreator = 200
)

// The narrowest prefix lengths a ban may have: wider bans (a /0 bans the
// whole Internet) are refused as the typing mistakes they almost always
// are. They match the bounds of [autoban] net_v4 and net_v6.
const (
	MinBitsV4 = 8
	MinBitsV6 = 16
)

// noToken is the answer to every request when no token is configured.
const noToken = "the admin API needs [admin] token_file"

// Options configure Handler.
type Options struct {
	// Backend holds the bans; required.
	Backend state.Backend
	// Token is the bearer token every request must carry; "" refuses
	// every request with 403.
	Token string
	// Relay is this relay's name: a ban made without a creator is made
	// by "admin@" + Relay.
	Relay string
	// Logger receives a line for every change; nil means slog.Default().
	// The token is never logged.
	Logger *slog.Logger
	// Now is the clock of Created and Expires; nil means time.Now.
	Now func() time.Time
}

// BanRequest is the body of POST /api/bans.
type BanRequest struct {
	// Prefix is an address (a /32 or /128 ban) or a CIDR, masked to its
	// network: "192.0.2.1", "192.0.2.0/24", "2001:db8::/32".
	Prefix string `json:"prefix"`
	// For is how long the ban lasts, a Go duration ("30m", "24h",
	// "168h"); "" means it never expires.
	For string `json:"for,omitempty"`
	// Reason is a free text shown to the administrator.
	Reason string `json:"reason,omitempty"`
	// Creator says who made the ban; "" means "admin@" + the relay.
	Creator string `json:"creator,omitempty"`
}

// FieldError is a BanRequest field that cannot be accepted.
type FieldError struct {
	// Field is the JSON name of the field: prefix, for, reason or creator.
	Field string
	// Msg says what is wrong with it.
	Msg string
}

// Error implements error: "field: msg".
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Ban validates r and returns the ban it asks for, made at now; relay
// names the creator when r has none. A refused field is a *FieldError.
func (r BanRequest) Ban(now time.Time, relay string) (state.Ban, error) {
	p, err := ParsePrefix(r.Prefix)
	if err != nil {
		return state.Ban{}, &FieldError{Field: "prefix", Msg: err.Error()}
	}
	d, err := ParseFor(r.For)
	if err != nil {
		return state.Ban{}, &FieldError{Field: "for", Msg: err.Error()}
	}
	if msg := checkText(r.Reason, MaxReason); msg != "" {
		return state.Ban{}, &FieldError{Field: "reason", Msg: msg}
	}
	creator := strings.TrimSpace(r.Creator)
	if msg := checkText(creator, MaxCreator); msg != "" {
		return state.Ban{}, &FieldError{Field: "creator", Msg: msg}
	}
	if creator == "" {
		creator = "admin@" + relay
	}
	b := state.Ban{Prefix: p, Reason: r.Reason, Creator: creator, Created: now}
	if d > 0 {
		b.Expires = now.Add(d)
	}
	return b, nil
}

// checkText returns why s cannot be stored as a reason or creator, or "".
func checkText(s string, max int) string {
	switch {
	case len(s) > max:
		return fmt.Sprintf("is %d bytes long: at most %d", len(s), max)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "contains a control character (a line break, a tab...): write it on one line"
	}
	return ""
}

// ParsePrefix parses what a ban is on: an address, which becomes its /32
// or /128, or a CIDR, which is masked to its network (192.0.2.7/24 is
// 192.0.2.0/24). IPv4-mapped IPv6 becomes IPv4. Zones, and prefixes wider
// than a /MinBitsV4 or /MinBitsV6, are refused.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, errors.New("is required: an address or CIDR such as 192.0.2.1, 192.0.2.0/24 or 2001:db8::/32")
	}
	bad := fmt.Errorf("%q is not an address or CIDR (e.g. 192.0.2.1, 192.0.2.0/24, 2001:db8::/32)", s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, bad
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, bad
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone (%%%s): ban the address without it", s, a.Zone())
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%s mixes IPv4-mapped and IPv6 space: use at least a /96", p)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	if p.Addr().Is4() && p.Bits() < MinBitsV4 || p.Addr().Is6() && p.Bits() < MinBitsV6 {
		return netip.Prefix{}, fmt.Errorf("%s is too wide: a ban covers at most a /%d (IPv4) or a /%d (IPv6)", p, MinBitsV4, MinBitsV6)
	}
	return p, nil
}

// ParseFor parses how long a ban lasts: a positive Go duration, or ""
// for a ban that never expires (0).
func ParseFor(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration: want e.g. \"30m\", \"24h\" or \"168h\" (a week), or none for a ban that never expires", s)
	}
	return d, nil
}

// handler serves the API.
type handler struct {
	o      Options
	bearer Bearer
}

// Handler returns the admin API over o.Backend. It answers only the
// requests that carry o.Token as a bearer token.
func Handler(o Options) http.Handler {
	h := newHandler(o)
	return h.authorize(h.routes())
}

// API returns the admin API's routes without any authorization: for a
// caller (the web console) that authorizes every request itself.
func API(o Options) http.Handler { return newHandler(o).routes() }

func newHandler(o Options) *handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &handler{o: o, bearer: NewBearer(o.Token)}
}

func (h *handler) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/bans", h.list)
	mux.HandleFunc("POST /api/bans", h.add)
	mux.HandleFunc("DELETE /api/bans/{cidr...}", h.remove)
	return mux
}

// Bearer checks the bearer token of requests. It keeps only the token's
// SHA-256: comparing digests in constant time does not reveal the
// token's length either.
type Bearer struct {
	sum [sha256.Size]byte
	set bool
}

// NewBearer returns the check of token; "" accepts no request.
func NewBearer(token string) Bearer {
	return Bearer{sum: sha256.Sum256([]byte(token)), set: token != ""}
}

// Check reports whether r carries a bearer token (present) and whether it
// is the right one (ok).
func (b Bearer) Check(r *http.Request) (ok, present bool) {
	tok, present := bearer(r.Header.Get("Authorization"))
	if !present || !b.set {
		return false, present
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], b.sum[:]) == 1, true
}

// authorize lets through only the requests with the right bearer token.
func (h *handler) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.o.Token == "" {
			writeError(w, http.StatusForbidden, noToken, "")
			return
		}
		ok, present := h.bearer.Check(r)
		if !present {
			w.Header().Set("WWW-Authenticate", `Bearer realm="smtp-interceptor"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer followed by the token of [admin] token_file", "")
			return
		}
		if !ok {
			h.o.Logger.Warn("admin API: wrong token", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="smtp-interceptor", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "wrong token", "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the token of an Authorization header value.
func bearer(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// list answers GET /api/bans.
func (h *handler) list(w http.ResponseWriter, _ *http.Request) {
	bans := h.o.Backend.Bans()
	if bans == nil {
		bans = []state.Ban{}
	}
	writeJSON(w, http.StatusOK, bans)
}

// add answers POST /api/bans.
func (h *handler) add(w http.ResponseWriter, r *http.Request) {
	var req BanRequest
	if status, msg, field := decodeBody(w, r, &req); status != 0 {
		writeError(w, status, msg, field)
		return
	}
	b, err := req.Ban(h.o.Now(), h.o.Relay)
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			writeError(w, http.StatusBadRequest, fe.Error(), fe.Field)
			return
		}
		writeError(w, http.StatusBadRequest, err.Error(), "")
		return
	}
	if err := h.o.Backend.AddBan(r.Context(), b); err != nil {
		h.backendError(w, r, "add ban", b.Prefix, err)
		return
	}
	expires := "never"
	if !b.Expires.IsZero() {
		expires = b.Expires.Format(time.RFC3339)
	}
	h.o.Logger.Info("ban added", "prefix", b.Prefix, "by", b.Creator, "reason", b.Reason, "expires", expires, "remote", r.RemoteAddr)
	w.Header().Set("Location", "/api/bans/"+b.Prefix.String())
	writeJSON(w, http.StatusCreated, b)
}

// remove answers DELETE /api/bans/{cidr...}.
func (h *handler) remove(w http.ResponseWriter, r *http.Request) {
	p, err := ParsePrefix(r.PathValue("cidr"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "prefix: "+err.Error(), "prefix")
		return
	}
	removed, err := h.o.Backend.RemoveBan(r.Context(), p)
	if err != nil {
		h.backendError(w, r, "remove ban", p, err)
		return
	}
	if !removed {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no ban on " + p.String(), "removed": false})
		return
	}
	h.o.Logger.Info("ban removed", "prefix", p, "by", "admin@"+h.o.Relay, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"removed": true, "prefix": p.String()})
}

// backendError answers a failed backend call with 503.
func (h *handler) backendError(w http.ResponseWriter, r *http.Request, op string, p netip.Prefix, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away: nobody to answer
	}
	h.o.Logger.Warn("admin API: "+op+" failed", "prefix", p, "backend", h.o.Backend.Name(), "err", err)
	writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("%s %s: %v", op, p, err), "")
}

// decodeBody decodes the request's JSON body, of at most MaxBodyBytes,
// into v; on failure it returns the status, message and field (if one is
// to blame) to answer.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (status int, msg, field string) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			return 0, "", ""
		} else if err == nil {
			err = errors.New("more than one JSON value")
		}
	}
	var tooBig *http.MaxBytesError
	var wrongType *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", MaxBodyBytes), ""
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, `body: empty: want a JSON object such as {"prefix": "192.0.2.1", "for": "24h", "reason": "..."}`, ""
	case errors.As(err, &wrongType) && wrongType.Field != "":
		return http.StatusBadRequest, fmt.Sprintf("%s: want a JSON string, not a %s", wrongType.Field, wrongType.Value), wrongType.Field
	}
	return http.StatusBadRequest, "body: " + strings.TrimPrefix(err.Error(), "json: "), ""
}

// writeError answers status with {"error": msg}, and "field" when set.
func writeError(w http.ResponseWriter, status int, msg, field string) {
	body := map[string]string{"error": msg}
	if field != "" {
		body["field"] = field
	}
	writeJSON(w, status, body)
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	js, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		js = []byte(`{"error":"encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(js, '\n'))
}
