package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

const testToken = "0123456789abcdef0123456789abcdef"

// clock is the settable clock the handler and the backend share.
type clock = testutil.Clock

// api is a Handler over a memory backend, with its clock and log.
type api struct {
	t       *testing.T
	h       http.Handler
	backend state.Backend
	clock   *clock
	log     *testutil.SyncBuffer
}

func newAPI(t *testing.T, token string) *api {
	t.Helper()
	clk := testutil.NewClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	m, err := state.OpenMemory(state.MemoryOptions{Now: clk.Now, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	log := &testutil.SyncBuffer{}
	a := &api{t: t, backend: m, clock: clk, log: log}
	a.h = Handler(Options{Backend: m, Token: token, Relay: "relay-a", Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	return a
}

// do sends a request with the test token (auth "" sends none) and returns
// the status and the decoded JSON answer.
func (a *api) do(method, target, body, auth string) (int, http.Header, any) {
	a.t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, req)
	var v any
	if rec.Body.Len() > 0 && strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			a.t.Fatalf("%s %s: answer %q: %v", method, target, rec.Body.String(), err)
		}
	}
	return rec.Code, rec.Header(), v
}

func (a *api) call(method, target, body string) (int, any) {
	a.t.Helper()
	code, _, v := a.do(method, target, body, "Bearer "+testToken)
	return code, v
}

// prefixes lists the prefixes of a GET /api/bans answer.
func prefixes(t *testing.T, v any) []string {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("answer %v is not an array", v)
	}
	out := []string{}
	for _, b := range list {
		out = append(out, b.(map[string]any)["prefix"].(string))
	}
	return out
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name, token, auth string
		method, target    string
		code              int
		challenge         string
		errContains       string
	}{
		{name: "right token", token: testToken, auth: "Bearer " + testToken, method: "GET", target: "/api/bans", code: 200},
		{name: "scheme in lower case", token: testToken, auth: "bearer " + testToken, method: "GET", target: "/api/bans", code: 200},
		{name: "no header", token: testToken, method: "GET", target: "/api/bans", code: 401, challenge: "Bearer", errContains: "missing bearer token"},
		{name: "wrong token", token: testToken, auth: "Bearer " + strings.Repeat("x", 32), method: "GET", target: "/api/bans", code: 401,
			challenge: "Bearer", errContains: "wrong token"},
		{name: "token prefix", token: testToken, auth: "Bearer " + testToken[:16], method: "GET", target: "/api/bans", code: 401, challenge: "Bearer"},
		{name: "token and more", token: testToken, auth: "Bearer " + testToken + "x", method: "GET", target: "/api/bans", code: 401, challenge: "Bearer"},
		{name: "basic auth", token: testToken, auth: "Basic " + testToken, method: "GET", target: "/api/bans", code: 401, challenge: "Bearer"},
		{name: "empty bearer", token: testToken, auth: "Bearer ", method: "GET", target: "/api/bans", code: 401, challenge: "Bearer"},
		{name: "wrong token on POST", token: testToken, auth: "Bearer nope", method: "POST", target: "/api/bans", code: 401, challenge: "Bearer"},
		{name: "wrong token on DELETE", token: testToken, auth: "Bearer nope", method: "DELETE", target: "/api/bans/192.0.2.1", code: 401, challenge: "Bearer"},
		{name: "no token configured", token: "", auth: "Bearer ", method: "GET", target: "/api/bans", code: 403,
			errContains: "the admin API needs [admin] token_file"},
		{name: "no token configured, empty bearer", token: "", auth: "Bearer", method: "POST", target: "/api/bans", code: 403,
			errContains: "the admin API needs [admin] token_file"},
		{name: "unknown path needs the token", token: testToken, method: "GET", target: "/nope", code: 401, challenge: "Bearer"},
		{name: "unknown path", token: testToken, auth: "Bearer " + testToken, method: "GET", target: "/nope", code: 404},
		{name: "wrong method", token: testToken, auth: "Bearer " + testToken, method: "PUT", target: "/api/bans", code: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			a := newAPI(t, tc.token)
			body := ""
			if tc.method == "POST" {
				body = `{"prefix":"192.0.2.1"}`
			}
			code, hdr, v := a.do(tc.method, tc.target, body, tc.auth)
			is.Equal(code, tc.code)
			is.True(strings.HasPrefix(hdr.Get("WWW-Authenticate"), tc.challenge))
			if tc.challenge == "" {
				is.Equal(hdr.Get("WWW-Authenticate"), "")
			}
			if tc.errContains != "" {
				msg, _ := v.(map[string]any)["error"].(string)
				is.True(strings.Contains(msg, tc.errContains))
			}
			if tc.code != 200 {
				is.Equal(len(a.backend.Bans()), 0) // nothing was done
			}
			is.True(!strings.Contains(a.log.String(), testToken[:16])) // the token is never logged
		})
	}
}

func TestRoundTrip(t *testing.T) {
	is := is.New(t)
	a := newAPI(t, testToken)
	t0 := a.clock.Now()

	adds := []struct {
		body                    string
		prefix, creator, reason string
		expires                 time.Time
	}{
		{body: `{"prefix":"192.0.2.1","for":"24h","reason":"spam run"}`, prefix: "192.0.2.1/32", creator: "admin@relay-a",
			reason: "spam run", expires: t0.Add(24 * time.Hour)},
		{body: `{"prefix":"198.51.100.77/24","reason":"botnet","creator":"jdoe"}`, prefix: "198.51.100.0/24", creator: "jdoe", reason: "botnet"},
		{body: `{"prefix":"2001:DB8::1"}`, prefix: "2001:db8::1/128", creator: "admin@relay-a"},
		{body: `{"prefix":"2001:db8:aa::/48","for":""}`, prefix: "2001:db8:aa::/48", creator: "admin@relay-a"},
		{body: `{"prefix":"::ffff:203.0.113.9"}`, prefix: "203.0.113.9/32", creator: "admin@relay-a"},
	}
	for _, add := range adds {
		code, hdr, v := a.do("POST", "/api/bans", add.body, "Bearer "+testToken)
		is.Equal(code, http.StatusCreated)
		b := v.(map[string]any)
		is.Equal(b["prefix"], add.prefix)
		is.Equal(b["creator"], add.creator)
		is.Equal(b["reason"], add.reason)
		is.Equal(b["created"], t0.Format(time.RFC3339))
		is.Equal(hdr.Get("Location"), "/api/bans/"+add.prefix)
		if add.expires.IsZero() {
			_, has := b["expires"]
			is.True(!has) // never expires: omitted
		} else {
			is.Equal(b["expires"], add.expires.Format(time.RFC3339))
		}
	}
	is.True(strings.Contains(a.log.String(), `msg="ban added" prefix=192.0.2.1/32 by=admin@relay-a reason="spam run" expires=2025-03-02T12:00:00Z`))

	code, v := a.call("GET", "/api/bans", "")
	is.Equal(code, 200)
	is.Equal(prefixes(t, v), []string{"192.0.2.1/32", "198.51.100.0/24", "203.0.113.9/32", "2001:db8::1/128", "2001:db8:aa::/48"})
	ban, ok := a.backend.Banned(netip.MustParseAddr("198.51.100.200"))
	is.True(ok)
	is.Equal(ban.Creator, "jdoe")

	for _, target := range []string{"/api/bans/192.0.2.1", "/api/bans/198.51.100.0%2F24", "/api/bans/2001:db8::1",
		"/api/bans/2001:db8:aa::/48", "/api/bans/203.0.113.9/32"} {
		code, v := a.call("DELETE", target, "")
		is.Equal(code, 200) // target
		is.Equal(v.(map[string]any)["removed"], true)
	}
	is.True(strings.Contains(a.log.String(), `msg="ban removed" prefix=198.51.100.0/24 by=admin@relay-a`))
	code, v = a.call("GET", "/api/bans", "")
	is.Equal(code, 200)
	is.Equal(prefixes(t, v), []string{}) // an empty array, not null
}

func TestReplace(t *testing.T) {
	is := is.New(t)
	a := newAPI(t, testToken)
	code, _ := a.call("POST", "/api/bans", `{"prefix":"192.0.2.0/24","for":"1h","reason":"first"}`)
	is.Equal(code, 201)
	code, _ = a.call("POST", "/api/bans", `{"prefix":"192.0.2.9/24","reason":"second"}`)
	is.Equal(code, 201)
	bans := a.backend.Bans()
	is.Equal(len(bans), 1)
	is.Equal(bans[0].Reason, "second")
	is.True(bans[0].Expires.IsZero())
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name, body  string
		code        int
		field       string
		errContains string
	}{
		{name: "garbage prefix", body: `{"prefix":"not-an-ip"}`, code: 400, field: "prefix", errContains: `prefix: "not-an-ip" is not an address or CIDR`},
		{name: "no prefix", body: `{"reason":"x"}`, code: 400, field: "prefix", errContains: "prefix: is required"},
		{name: "bad bits", body: `{"prefix":"192.0.2.0/33"}`, code: 400, field: "prefix", errContains: "prefix:"},
		{name: "too wide v4", body: `{"prefix":"0.0.0.0/0"}`, code: 400, field: "prefix", errContains: "too wide"},
		{name: "too wide v6", body: `{"prefix":"2000::/3"}`, code: 400, field: "prefix", errContains: "too wide"},
		{name: "zone", body: `{"prefix":"fe80::1%eth0"}`, code: 400, field: "prefix", errContains: "zone"},
		{name: "mapped too wide", body: `{"prefix":"::ffff:0:0/80"}`, code: 400, field: "prefix", errContains: "IPv4-mapped"},
		{name: "prefix as number", body: `{"prefix":19202}`, code: 400, field: "prefix", errContains: "prefix: want a JSON string"},
		{name: "bad duration", body: `{"prefix":"192.0.2.1","for":"a day"}`, code: 400, field: "for", errContains: `for: "a day" is not a positive duration`},
		{name: "days", body: `{"prefix":"192.0.2.1","for":"7d"}`, code: 400, field: "for", errContains: "168h"},
		{name: "negative duration", body: `{"prefix":"192.0.2.1","for":"-1h"}`, code: 400, field: "for", errContains: "positive"},
		{name: "zero duration", body: `{"prefix":"192.0.2.1","for":"0s"}`, code: 400, field: "for", errContains: "positive"},
		{name: "duration as number", body: `{"prefix":"192.0.2.1","for":3600}`, code: 400, field: "for", errContains: "for: want a JSON string"},
		{name: "reason with line break", body: `{"prefix":"192.0.2.1","reason":"a\nb"}`, code: 400, field: "reason", errContains: "control character"},
		{name: "reason too long", body: fmt.Sprintf(`{"prefix":"192.0.2.1","reason":%q}`, strings.Repeat("r", MaxReason+1)), code: 400,
			field: "reason", errContains: "at most 1000"},
		{name: "creator too long", body: fmt.Sprintf(`{"prefix":"192.0.2.1","creator":%q}`, strings.Repeat("c", MaxCreator+1)), code: 400,
			field: "creator", errContains: "creator:"},
		{name: "unknown field", body: `{"prefix":"192.0.2.1","duration":"1h"}`, code: 400, errContains: `unknown field "duration"`},
		{name: "not JSON", body: `prefix=192.0.2.1`, code: 400, errContains: "body:"},
		{name: "empty body", body: ``, code: 400, errContains: "body: empty"},
		{name: "array", body: `[{"prefix":"192.0.2.1"}]`, code: 400, errContains: "body:"},
		{name: "two values", body: `{"prefix":"192.0.2.1"}{"prefix":"192.0.2.2"}`, code: 400, errContains: "more than one JSON value"},
		{name: "body too large", body: `{"prefix":"192.0.2.1","reason":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, code: 413,
			errContains: "larger than 1048576 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			a := newAPI(t, testToken)
			code, v := a.call("POST", "/api/bans", tc.body)
			is.Equal(code, tc.code)
			doc := v.(map[string]any)
			msg, _ := doc["error"].(string)
			is.True(strings.Contains(msg, tc.errContains)) // the message
			field, _ := doc["field"].(string)
			is.Equal(field, tc.field)
			is.Equal(len(a.backend.Bans()), 0)
		})
	}
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name, target string
		code         int
		body         map[string]any
		left         int // bans left afterwards
	}{
		{name: "unknown", target: "/api/bans/192.0.2.99", code: 404, body: map[string]any{"error": "no ban on 192.0.2.99/32", "removed": false}, left: 1},
		{name: "covered but not the same prefix", target: "/api/bans/198.51.100.7", code: 404,
			body: map[string]any{"error": "no ban on 198.51.100.7/32", "removed": false}, left: 1},
		{name: "wider than the ban", target: "/api/bans/198.51.100.0/23", code: 404,
			body: map[string]any{"error": "no ban on 198.51.100.0/23", "removed": false}, left: 1},
		{name: "garbage", target: "/api/bans/garbage", code: 400,
			body: map[string]any{"error": `prefix: "garbage" is not an address or CIDR (e.g. 192.0.2.1, 192.0.2.0/24, 2001:db8::/32)`, "field": "prefix"}, left: 1},
		{name: "no prefix", target: "/api/bans/", code: 400,
			body: map[string]any{"error": "prefix: is required: an address or CIDR such as 192.0.2.1, 192.0.2.0/24 or 2001:db8::/32", "field": "prefix"}, left: 1},
		{name: "unmasked", target: "/api/bans/198.51.100.9/24", code: 200, body: map[string]any{"removed": true, "prefix": "198.51.100.0/24"}},
		{name: "escaped slash", target: "/api/bans/198.51.100.0%2f24", code: 200, body: map[string]any{"removed": true, "prefix": "198.51.100.0/24"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			a := newAPI(t, testToken)
			code, _ := a.call("POST", "/api/bans", `{"prefix":"198.51.100.0/24"}`)
			is.Equal(code, 201)
			code, v := a.call("DELETE", tc.target, "")
			is.Equal(code, tc.code)
			is.Equal(v, any(tc.body))
			is.Equal(len(a.backend.Bans()), tc.left)
		})
	}
}

func TestExpiry(t *testing.T) {
	is := is.New(t)
	a := newAPI(t, testToken)
	t0 := a.clock.Now()
	code, v := a.call("POST", "/api/bans", `{"prefix":"192.0.2.1","for":"90m"}`)
	is.Equal(code, 201)
	is.Equal(v.(map[string]any)["expires"], t0.Add(90*time.Minute).Format(time.RFC3339))
	code, _ = a.call("POST", "/api/bans", `{"prefix":"192.0.2.2"}`)
	is.Equal(code, 201)

	a.clock.Advance(89 * time.Minute)
	_, v = a.call("GET", "/api/bans", "")
	is.Equal(prefixes(t, v), []string{"192.0.2.1/32", "192.0.2.2/32"})
	_, banned := a.backend.Banned(netip.MustParseAddr("192.0.2.1"))
	is.True(banned)

	a.clock.Advance(time.Minute)
	_, v = a.call("GET", "/api/bans", "")
	is.Equal(prefixes(t, v), []string{"192.0.2.2/32"}) // expired at 90m; the other never does
	_, banned = a.backend.Banned(netip.MustParseAddr("192.0.2.1"))
	is.True(!banned)

	// A ban made later is timed from then.
	code, v = a.call("POST", "/api/bans", `{"prefix":"192.0.2.1","for":"1h"}`)
	is.Equal(code, 201)
	is.Equal(v.(map[string]any)["created"], t0.Add(90*time.Minute).Format(time.RFC3339))
	is.Equal(v.(map[string]any)["expires"], t0.Add(150*time.Minute).Format(time.RFC3339))
}

// downBackend is a backend whose store is unreachable.
type downBackend struct{ state.Backend }

func (downBackend) AddBan(context.Context, state.Ban) error {
	return fmt.Errorf("state: redis add ban: %w", state.ErrUnavailable)
}

func (downBackend) RemoveBan(context.Context, netip.Prefix) (bool, error) {
	return false, fmt.Errorf("state: redis remove ban: %w", state.ErrUnavailable)
}

func TestBackendUnavailable(t *testing.T) {
	tests := []struct {
		method, target, body string
		errContains          string
	}{
		{method: "POST", target: "/api/bans", body: `{"prefix":"192.0.2.1"}`, errContains: "add ban 192.0.2.1/32: state: redis add ban: state backend unavailable"},
		{method: "DELETE", target: "/api/bans/192.0.2.1", errContains: "remove ban 192.0.2.1/32: state: redis remove ban: state backend unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.method, func(t *testing.T) {
			is := is.New(t)
			a := newAPI(t, testToken)
			a.h = Handler(Options{Backend: downBackend{a.backend}, Token: testToken, Relay: "relay-a", Logger: testutil.Logger(t)})
			code, v := a.call(tc.method, tc.target, tc.body)
			is.Equal(code, http.StatusServiceUnavailable)
			is.Equal(v.(map[string]any)["error"], tc.errContains)
		})
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "192.0.2.1", want: "192.0.2.1/32"},
		{in: " 192.0.2.1 ", want: "192.0.2.1/32"},
		{in: "192.0.2.7/24", want: "192.0.2.0/24"},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "2001:db8:1:2:3::/64", want: "2001:db8:1:2::/64"},
		{in: "::ffff:192.0.2.1", want: "192.0.2.1/32"},
		{in: "::ffff:192.0.2.0/120", want: "192.0.2.0/24"},
		{in: "", err: "is required"},
		{in: "192.0.2", err: "is not an address or CIDR"},
		{in: "192.0.2.1/", err: "is not an address or CIDR"},
		{in: "192.0.2.1/24/8", err: "is not an address or CIDR"},
		{in: "10.0.0.0/7", err: "too wide"},
		{in: "2001::/15", err: "too wide"},
		{in: "fe80::1%eth0", err: "has a zone"},
		{in: "::ffff:0.0.0.0/95", err: "IPv4-mapped"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			is := is.New(t)
			p, err := ParsePrefix(tc.in)
			if tc.err != "" {
				is.True(err != nil)
				is.True(strings.Contains(err.Error(), tc.err)) // the error
				return
			}
			is.NoErr(err)
			is.Equal(p.String(), tc.want)
		})
	}
}
