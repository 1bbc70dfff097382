package rules

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// StateConfig is the [state] section: where the dynamic state a fleet of
// relays shares (bans, automatic-ban counts, rate limits, statistics) is
// kept. The state package opens it; the engine reaches it through BanList
// and RateLimiter.
type StateConfig struct {
	// Backend is "memory" (this process; bans kept in File) or "redis".
	Backend string
	// File keeps the memory backend's bans across restarts; "" keeps
	// them in memory only.
	File string
	// Addrs are the Redis servers: one is a plain server, several the
	// seeds of a Cluster, with MasterName the Sentinels.
	Addrs      []string
	MasterName string
	DB         int
	Username   string
	// Password is read from password_file when the configuration is
	// loaded; never printed.
	Password Secret `key:"password_file"`
	// TLS connects to Redis over TLS, trusting CAFile ("" the system's).
	TLS    bool
	CAFile string
	// Prefix starts every Redis key and channel name.
	Prefix string
	// Timeout bounds every call to Redis: no request waits longer.
	Timeout time.Duration
	// Relay is this relay's name in the fleet (ban creators, statistics);
	// "" is the host name.
	Relay string
}

// AdminConfig is the [admin] section: the HTTP API that manages bans.
type AdminConfig struct {
	// Listen is the admin listener's host:port; "" turns it off.
	Listen string
	// Token is the bearer token read from token_file; empty turns the
	// API off (it is never served without one).
	Token Secret `key:"token_file"`
	// TokenFile is where Token was read from, for the command line.
	TokenFile string `key:"token_file_path"`
	// UsersFile holds the web console's users, "name:bcrypt-hash" a line
	// (internal/webauth reads it, and reads it again when it changes);
	// "" means no one can log in to the console.
	UsersFile string
	// TLSCert and TLSKey are the PEM files of the listener's certificate
	// and key: with them the admin listener speaks HTTPS only.
	TLSCert, TLSKey string
}

// Loopback reports whether the admin listener is reachable from this host
// only: a loopback address or "localhost".
func (a AdminConfig) Loopback() bool {
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// BansConfig is the [bans] section: how a banned client is refused.
type BansConfig struct {
	Message string
}

// AutobanConfig is the [autoban] section: a client (or its network)
// refused Refusals times within Within, across the fleet, is banned for
// BanFor.
type AutobanConfig struct {
	Enabled        bool
	Refusals       int
	Within, BanFor time.Duration
	// NetV4 and NetV6 are the prefix lengths a ban covers: 32 and 128
	// ban the address alone.
	NetV4, NetV6 int
}

// The keys a rate limit counts by.
const (
	RateKeyClient       = "client"
	RateKeyClientNet    = "client_net"
	RateKeySender       = "sender"
	RateKeySenderDomain = "sender_domain"
	RateKeySASLUser     = "sasl_user"
)

// What a rate limit counts.
const (
	RateCountMessages    = "messages"
	RateCountRecipients  = "recipients"
	RateCountConnections = "connections"
)

// RateLimit is one [[ratelimit]] rule: at most Limit of Count per Per, by
// Key, fleet-wide.
type RateLimit struct {
	// Name names the rule in logs, metrics and its state keys; default
	// "ratelimit[N]".
	Name  string
	Key   string
	Count string
	Limit int
	Per   time.Duration
	// Reject refuses with 550 5.7.1 instead of tempfailing with 450 4.7.1.
	Reject  bool `key:"action"`
	Message string
}

func (b *builder) compileState(raw *rawConfig, cfg *Config) {
	st := raw.State
	sc := StateConfig{Backend: st.Backend, MasterName: st.MasterName, DB: st.DB, Username: st.Username,
		TLS: st.TLS, Prefix: st.Prefix, Timeout: b.duration("state.timeout", st.Timeout), Relay: strings.TrimSpace(st.Relay)}
	switch st.Backend {
	case "memory":
		if len(st.Addrs) > 0 {
			b.errorf("state.addrs", "is for backend = \"redis\"; the memory backend keeps its state in this process")
		}
	case "redis":
		if len(st.Addrs) == 0 {
			b.errorf("state.addrs", "backend = \"redis\" needs at least one address, e.g. [\"127.0.0.1:6379\"]")
		}
		if st.File != "" {
			b.errorf("state.file", "is for backend = \"memory\"; Redis keeps the state of the fleet")
		}
	default:
		b.errorf("state.backend", "unknown backend %q: want memory or redis", st.Backend)
	}
	for _, a := range st.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			b.errorf("state.addrs", "invalid address %q: want host:port, e.g. \"127.0.0.1:6379\"", a)
			continue
		}
		sc.Addrs = append(sc.Addrs, a)
	}
	if st.File != "" {
		sc.File = b.path(st.File)
	}
	if st.DB < 0 {
		b.errorf("state.db", "must be 0 or more, not %d", st.DB)
	}
	if strings.ContainsAny(st.Prefix, "{} \t\n") {
		b.errorf("state.prefix", "%q must not contain braces or spaces", st.Prefix)
	}
	if st.CAFile != "" {
		sc.CAFile = b.path(st.CAFile)
		if _, err := os.Stat(sc.CAFile); err != nil {
			b.errorf("state.ca_file", "%v", err)
		}
	}
	if st.PasswordFile != "" {
		if pw, ok := b.secretFile("state.password_file", st.PasswordFile); ok {
			sc.Password = pw
		}
	}
	cfg.State = sc

	ad := raw.Admin
	cfg.Admin = AdminConfig{Listen: ad.Listen}
	if ad.Listen != "" {
		if _, _, err := net.SplitHostPort(ad.Listen); err != nil {
			b.errorf("admin.listen", "invalid address %q: want host:port, e.g. \"127.0.0.1:10063\"", ad.Listen)
		}
	}
	if ad.TokenFile != "" {
		cfg.Admin.TokenFile = b.path(ad.TokenFile)
		if tok, ok := b.secretFile("admin.token_file", ad.TokenFile); ok {
			if len(tok) < 16 {
				b.errorf("admin.token_file", "the token is %d characters long: use at least 16 (e.g. openssl rand -hex 32)", len(tok))
			}
			cfg.Admin.Token = tok
		}
	}

	if ad.UsersFile != "" {
		cfg.Admin.UsersFile = b.path(ad.UsersFile)
	}
	switch {
	case ad.TLSCert != "" && ad.TLSKey != "":
		cfg.Admin.TLSCert, cfg.Admin.TLSKey = b.path(ad.TLSCert), b.path(ad.TLSKey)
		if _, err := tls.LoadX509KeyPair(cfg.Admin.TLSCert, cfg.Admin.TLSKey); err != nil {
			b.errorf("admin.tls_cert", "load the certificate %s and key %s: %v", cfg.Admin.TLSCert, cfg.Admin.TLSKey, err)
		}
	case ad.TLSCert != "":
		b.errorf("admin.tls_key", "is required with admin.tls_cert: the PEM file of the certificate's private key")
	case ad.TLSKey != "":
		b.errorf("admin.tls_cert", "is required with admin.tls_key: the PEM file of the certificate")
	}

	if cfg.Admin.Listen != "" && (cfg.Admin.Token != "" || cfg.Admin.UsersFile != "") && !cfg.Admin.Loopback() {
		if cfg.Admin.TLSCert == "" {
			b.warns = append(b.warns, fmt.Sprintf("admin.listen %s is not a loopback address and the listener has no TLS: the token and the console's passwords cross the network in clear, and browsers keep no login cookie over plain HTTP to another host; set admin.tls_cert and admin.tls_key, or listen on 127.0.0.1", cfg.Admin.Listen))
		} else {
			b.warns = append(b.warns, fmt.Sprintf("admin.listen %s is not a loopback address: the admin API and the web console are reachable from the network; firewall the port to the administrators' hosts", cfg.Admin.Listen))
		}
	}

	cfg.Bans = BansConfig{Message: b.message("bans.message", raw.Bans.Message)}

	ab := raw.Autoban
	cfg.Autoban = AutobanConfig{Enabled: ab.Enabled, Refusals: ab.Refusals, NetV4: ab.NetV4, NetV6: ab.NetV6,
		Within: b.duration("autoban.within", ab.Within), BanFor: b.duration("autoban.ban_for", ab.BanFor)}
	if ab.Refusals < 1 {
		b.errorf("autoban.refusals", "must be 1 or more, not %d", ab.Refusals)
	}
	if ab.NetV4 < 8 || ab.NetV4 > 32 {
		b.errorf("autoban.net_v4", "must be between 8 and 32, not %d", ab.NetV4)
	}
	if ab.NetV6 < 16 || ab.NetV6 > 128 {
		b.errorf("autoban.net_v6", "must be between 16 and 128, not %d", ab.NetV6)
	}

	names := map[string]bool{}
	for i, r := range raw.RateLimits {
		sec := fmt.Sprintf("ratelimit[%d]", i)
		rl := RateLimit{Name: r.Name, Key: r.Key, Count: r.Count, Limit: r.Limit, Message: r.Message}
		if rl.Name == "" {
			rl.Name = sec
		}
		if names[rl.Name] {
			b.errorf(sec+".name", "%q names two rules: each rule needs its own name (its counts are kept under it)", rl.Name)
		}
		names[rl.Name] = true
		switch r.Key {
		case RateKeyClient, RateKeyClientNet, RateKeySender, RateKeySenderDomain, RateKeySASLUser:
		default:
			b.errorf(sec+".key", "unknown key %q: want client, client_net, sender, sender_domain or sasl_user", r.Key)
		}
		switch r.Count {
		case RateCountMessages, RateCountRecipients:
		case RateCountConnections:
			if r.Key != RateKeyClient && r.Key != RateKeyClientNet {
				b.errorf(sec+".count", "connections are counted by client or client_net: a connection has no %s yet", r.Key)
			}
		default:
			b.errorf(sec+".count", "unknown count %q: want messages, recipients or connections", r.Count)
		}
		if r.Limit < 1 {
			b.errorf(sec+".limit", "must be 1 or more, not %d", r.Limit)
		}
		if r.Per == "" {
			b.errorf(sec+".per", "is required: the period of the limit, e.g. \"1h\"")
		} else {
			rl.Per = b.duration(sec+".per", r.Per)
		}
		switch r.Action {
		case "", "tempfail":
		case "reject":
			rl.Reject = true
		default:
			b.errorf(sec+".action", "unknown action %q: want tempfail or reject", r.Action)
		}
		if rl.Message == "" {
			rl.Message = "Rate limit exceeded, try again later"
			if rl.Reject {
				rl.Message = "Rate limit exceeded"
			}
		}
		rl.Message = b.message(sec+".message", rl.Message)
		cfg.RateLimits = append(cfg.RateLimits, rl)
	}
}

// secretFile reads a password or token file (a trailing newline removed),
// which a reload watches too.
func (b *builder) secretFile(key, file string) (Secret, bool) {
	p := b.path(file)
	data, err := os.ReadFile(p)
	if err != nil {
		b.errorf(key, "read %s: %v", p, err)
		return "", false
	}
	b.files = append(b.files, p)
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		b.errorf(key, "%s is empty", p)
		return "", false
	}
	return Secret(s), true
}
