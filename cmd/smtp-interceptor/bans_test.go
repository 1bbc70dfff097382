package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/admin"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

const banTestToken = "fedcba9876543210fedcba9876543210"

// banTokenFile writes token to a file and returns its path.
func banTokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "admin.token")
	writeFile(t, p, token+"\n")
	return p
}

// adminConfig is an [admin] section that reaches listen with token.
func adminConfig(t *testing.T, listen, token string) string {
	return fmt.Sprintf("[admin]\nlisten = %q\ntoken_file = %q\n", listen, banTokenFile(t, token))
}

// redisConfig is a [state] section on the Redis at addr.
func redisConfig(addr string) string {
	return fmt.Sprintf("[state]\nbackend = \"redis\"\naddrs = [%q]\nrelay = \"cli\"\n", addr)
}

// startAdminAPI runs the admin API of a relay named relay-t over a memory
// backend on a loopback HTTP server, and returns its address and backend.
func startAdminAPI(t *testing.T) (string, state.Backend) {
	t.Helper()
	m, err := state.OpenMemory(state.MemoryOptions{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(admin.Handler(admin.Options{Backend: m, Token: banTestToken, Relay: "relay-t", Logger: testutil.Logger(t)}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), m
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// openRelay opens a Redis backend as a relay of the fleet would.
func openRelay(t *testing.T, addr string) state.Backend {
	t.Helper()
	r, err := state.OpenRedis(state.RedisOptions{Addrs: []string{addr}, Relay: "relay-r", Timeout: time.Second, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestBanRoundTrip runs ban, bans and unban against the admin API of a
// relay with a memory backend, and against Redis directly, checking what
// the relay's backend (or another relay of the fleet) sees.
func TestBanRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T) (extra string, relay state.Backend)
		creator string
	}{
		{name: "admin API", creator: "admin@relay-t", setup: func(t *testing.T) (string, state.Backend) {
			addr, m := startAdminAPI(t)
			return adminConfig(t, addr, banTestToken), m
		}},
		{name: "redis", creator: "admin@cli", setup: func(t *testing.T) (string, state.Backend) {
			mr := miniredis.RunT(t)
			return redisConfig(mr.Addr()), openRelay(t, mr.Addr())
		}},
		{name: "redis, admin API down", creator: "admin@cli", setup: func(t *testing.T) (string, state.Backend) {
			mr := miniredis.RunT(t)
			return redisConfig(mr.Addr()) + adminConfig(t, closedAddr(t), banTestToken), openRelay(t, mr.Addr())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			extra, relay := tc.setup(t)
			cfg, _ := writeConfig(t, extra)
			banned := func(ip string) bool {
				_, ok := relay.Banned(netip.MustParseAddr(ip))
				return ok
			}

			before := time.Now()
			code, out, errs := runCmd("ban", "-c", cfg, "192.0.2.1", "--for", "1h", "--reason", "spam run")
			is.Equal(code, 0) // ban: errs
			is.True(strings.HasPrefix(out, "banned 192.0.2.1/32 until "))
			is.True(strings.HasSuffix(out, ", by "+tc.creator+": spam run\n"))
			if tc.name == "redis, admin API down" {
				is.True(strings.HasPrefix(errs, "ban: the admin API at 127.0.0.1:"))
				is.True(strings.Contains(errs, "is not reachable (connection refused); using [state] redis directly\n")) // errs
			} else {
				is.Equal(errs, "")
			}
			until, err := time.Parse(time.RFC3339, strings.TrimSuffix(strings.Fields(out)[3], ","))
			is.NoErr(err)
			is.True(!until.Before(before.Add(time.Hour).Truncate(time.Second)))
			is.True(until.Before(time.Now().Add(time.Hour + time.Second)))

			code, out, _ = runCmd("ban", "--reason", "botnet", "-c", cfg, "198.51.100.7/24") // flags first, unmasked
			is.Equal(code, 0)
			is.Equal(out, "banned 198.51.100.0/24 with no expiry, by "+tc.creator+": botnet\n")
			code, out, _ = runCmd("ban", "-c", cfg, "--", "2001:DB8::1")
			is.Equal(code, 0)
			is.Equal(out, "banned 2001:db8::1/128 with no expiry, by "+tc.creator+"\n")
			waitFor(t, "the bans on the relay", func() bool { return banned("192.0.2.1") && banned("198.51.100.200") && banned("2001:db8::1") })

			code, out, _ = runCmd("bans", "-c", cfg)
			is.Equal(code, 0)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			is.Equal(len(lines), 4)
			is.Equal(strings.Fields(lines[0]), []string{"PREFIX", "EXPIRES", "CREATOR", "REASON"})
			is.Equal(strings.Fields(lines[1]), []string{"192.0.2.1/32", until.Local().Format(time.RFC3339), tc.creator, "spam", "run"})
			is.Equal(strings.Fields(lines[2]), []string{"198.51.100.0/24", "never", tc.creator, "botnet"})
			is.Equal(strings.Fields(lines[3]), []string{"2001:db8::1/128", "never", tc.creator, "-"})

			code, out, _ = runCmd("bans", "--json", "-c", cfg)
			is.Equal(code, 0)
			var bans []state.Ban
			is.NoErr(json.Unmarshal([]byte(out), &bans))
			is.Equal(len(bans), 3)
			is.Equal(bans[0].Prefix, netip.MustParsePrefix("192.0.2.1/32"))
			is.Equal(bans[0].Reason, "spam run")
			is.True(bans[0].Expires.Truncate(time.Second).Equal(until))
			is.Equal(bans[1].Creator, tc.creator)
			is.True(bans[2].Expires.IsZero())

			code, out, _ = runCmd("unban", "-c", cfg, "192.0.2.1")
			is.Equal(code, 0)
			is.Equal(out, "removed 192.0.2.1/32\n")
			code, out, errs = runCmd("unban", "192.0.2.1", "-c", cfg) // flag after the address
			is.Equal(code, 1)
			is.Equal(out, "")
			is.True(strings.HasSuffix(errs, "unban: no ban on 192.0.2.1/32\n"))
			code, _, _ = runCmd("unban", "-c", cfg, "198.51.100.0/24")
			is.Equal(code, 0)
			code, out, _ = runCmd("unban", "-c", cfg, "2001:db8::1/128")
			is.Equal(code, 0)
			is.Equal(out, "removed 2001:db8::1/128\n")
			waitFor(t, "the bans to go from the relay", func() bool {
				return !banned("192.0.2.1") && !banned("198.51.100.200") && !banned("2001:db8::1")
			})

			code, out, _ = runCmd("bans", "-c", cfg)
			is.Equal(code, 0)
			is.Equal(out, "no bans\n")
			code, out, _ = runCmd("bans", "-c", cfg, "--json")
			is.Equal(code, 0)
			is.Equal(out, "[]\n")
		})
	}
}

// TestBanReadsReplicaOfFleet: bans made by another relay are listed by a
// bans that opens Redis directly, at once (its replica is filled before
// it answers).
func TestBanReadsReplicaOfFleet(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	relay := openRelay(t, mr.Addr())
	for i := range 50 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32)
		is.NoErr(relay.AddBan(t.Context(), state.Ban{Prefix: p, Creator: "autoban@relay-r", Reason: "refused"}))
	}
	cfg, _ := writeConfig(t, redisConfig(mr.Addr()))
	code, out, errs := runCmd("bans", "-c", cfg, "--json")
	is.Equal(code, 0) // bans: errs
	var bans []state.Ban
	is.NoErr(json.Unmarshal([]byte(out), &bans))
	is.Equal(len(bans), 50)
	is.Equal(bans[0].Creator, "autoban@relay-r")
	is.Equal(errs, "")
}

func TestBanErrors(t *testing.T) {
	apiAddr, _ := startAdminAPI(t)
	memory, _ := writeConfig(t, "")
	noListen, _ := writeConfig(t, adminConfig(t, "", banTestToken))
	wrongToken, _ := writeConfig(t, adminConfig(t, apiAddr, strings.Repeat("w", 32)))
	serverDown, _ := writeConfig(t, adminConfig(t, closedAddr(t), banTestToken))
	redisDown, _ := writeConfig(t, redisConfig(closedAddr(t)))
	const memoryMsg = "the memory backend lives in the running server: set [admin] token_file so %[1]s can reach it through the admin API\n"
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{name: "bad address", args: []string{"ban", "-c", memory, "garbage"}, code: 2,
			stderr: []string{`ban: "garbage" is not an address or CIDR (e.g. 192.0.2.1, 192.0.2.0/24, 2001:db8::/32)`}},
		{name: "bad CIDR", args: []string{"ban", "-c", memory, "192.0.2.0/33"}, code: 2, stderr: []string{`ban: "192.0.2.0/33" is not an address or CIDR`}},
		{name: "too wide", args: []string{"ban", "-c", memory, "0.0.0.0/0"}, code: 2, stderr: []string{"ban: 0.0.0.0/0 is too wide"}},
		{name: "bad duration", args: []string{"ban", "-c", memory, "192.0.2.1", "--for", "1d"}, code: 2,
			stderr: []string{`ban: --for: "1d" is not a positive duration`}},
		{name: "reason on two lines", args: []string{"ban", "-c", memory, "192.0.2.1", "--reason", "a\nb"}, code: 2,
			stderr: []string{"ban: --reason: contains a control character"}},
		{name: "no address", args: []string{"ban", "-c", memory, "--for", "1h"}, code: 2, stderr: []string{"ban: want an address or a CIDR"}},
		{name: "two addresses", args: []string{"ban", "-c", memory, "192.0.2.1", "192.0.2.2"}, code: 2,
			stderr: []string{"ban: want one address or CIDR, not 2: 192.0.2.1 192.0.2.2"}},
		{name: "bad flag after the address", args: []string{"ban", "192.0.2.1", "--nope"}, code: 2,
			stderr: []string{"flag provided but not defined: -nope", "usage: " + banSynopsis}},
		{name: "help", args: []string{"ban", "-h"}, code: 0, stdout: "usage: " + banSynopsis},
		{name: "unban bad address", args: []string{"unban", "-c", memory, "192.0.2.x"}, code: 2, stderr: []string{`unban: "192.0.2.x" is not an address or CIDR`}},
		{name: "unban no address", args: []string{"unban", "-c", memory}, code: 2, stderr: []string{"unban: want an address or a CIDR"}},
		{name: "bans argument", args: []string{"bans", "-c", memory, "192.0.2.1"}, code: 2, stderr: []string{`bans: unexpected argument "192.0.2.1"`}},
		{name: "bans help", args: []string{"bans", "--help"}, code: 0, stdout: "usage: " + bansSynopsis},
		{name: "missing config", args: []string{"bans", "-c", "/nonexistent.toml"}, code: 2, stderr: []string{"/nonexistent.toml"}},
		{name: "memory without token: ban", args: []string{"ban", "-c", memory, "192.0.2.1"}, code: 2, stderr: []string{"ban: " + fmt.Sprintf(memoryMsg, "ban")}},
		{name: "memory without token: unban", args: []string{"unban", "-c", memory, "192.0.2.1"}, code: 2, stderr: []string{"unban: " + fmt.Sprintf(memoryMsg, "unban")}},
		{name: "memory without token: bans", args: []string{"bans", "-c", memory}, code: 2, stderr: []string{"bans: " + fmt.Sprintf(memoryMsg, "bans")}},
		{name: "built-in defaults", args: []string{"bans"}, code: 2,
			stderr: []string{"using the built-in defaults", "bans: " + fmt.Sprintf(memoryMsg, "bans")}},
		{name: "memory without listen", args: []string{"ban", "-c", noListen, "192.0.2.1"}, code: 2,
			stderr: []string{"ban: the memory backend lives in the running server: set [admin] listen so ban can reach it through the admin API"}},
		{name: "wrong token", args: []string{"bans", "-c", wrongToken}, code: 1,
			stderr: []string{"bans: the admin API at " + apiAddr + ": wrong token (401 Unauthorized)"}},
		{name: "server down", args: []string{"ban", "-c", serverDown, "192.0.2.1"}, code: 1,
			stderr: []string{"ban: the admin API at ", "is not reachable (is serve running?)", "connection refused"}},
		{name: "redis down", args: []string{"unban", "-c", redisDown, "192.0.2.1"}, code: 1,
			stderr: []string{"unban: [state] redis 127.0.0.1:", "state backend unavailable (not reachable within 2s)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			code, out, errs := runCmd(tc.args...)
			is.Equal(code, tc.code)
			is.True(strings.HasPrefix(out, tc.stdout)) // stdout
			for _, s := range tc.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr %q lacks %q", errs, s)
				}
			}
		})
	}
}

func TestBanDialAddr(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"127.0.0.1:10063", "127.0.0.1:10063"},
		{":10063", "127.0.0.1:10063"},
		{"0.0.0.0:10063", "127.0.0.1:10063"},
		{"[::]:10063", "[::1]:10063"},
		{"[2001:db8::5]:10063", "[2001:db8::5]:10063"},
		{"admin.example:10063", "admin.example:10063"},
	}
	for _, tc := range tests {
		t.Run(tc.listen, func(t *testing.T) {
			is.New(t).Equal(dialAddr(tc.listen), tc.want)
		})
	}
}
