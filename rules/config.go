package rules

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// ListAction is what a list control does when it matches.
type ListAction uint8

// The list actions of DESIGN §3. Not every control takes every action:
// DNS whitelists take skip, log and tag; blacklists take log, tag, reject.
const (
	ListLog ListAction = iota
	ListTag
	ListReject
	ListSkip
	// ListGreylist marks the client for [greylist] apply_to = "listed".
	ListGreylist
)

// String returns the action as written in the configuration.
func (a ListAction) String() string {
	switch a {
	case ListLog:
		return "log"
	case ListTag:
		return "tag"
	case ListReject:
		return "reject"
	case ListSkip:
		return "skip"
	case ListGreylist:
		return "greylist"
	}
	return "unknown"
}

// WhitelistScope says which controls a [whitelist] match bypasses.
type WhitelistScope uint8

// ScopeAll bypasses every control; ScopeLists only the black and DNS lists
// (Domino's private whitelist).
const (
	ScopeAll WhitelistScope = iota
	ScopeLists
)

// String returns the scope as written in the configuration.
func (s WhitelistScope) String() string {
	if s == ScopeLists {
		return "lists"
	}
	return "all"
}

// Config is a validated, compiled configuration. It is immutable once built:
// a reload builds a new one and the engine swaps it in whole.
type Config struct {
	// Path is the file it was loaded from; "" for the built-in defaults.
	Path string
	// Files lists every file the configuration read (Path and list files),
	// for the reload watcher.
	Files []string
	// Warnings are problems that do not stop the configuration from loading.
	Warnings []string
	// shadowed lists the controls whose section says mode = "shadow".
	shadowed map[Control]bool

	Server           ServerConfig
	Log              LogConfig
	DNS              DNSConfig
	Whitelist        WhitelistConfig
	Blacklist        BlacklistConfig
	Connections      ConnectionsConfig
	PrivateBlacklist PrivateBlacklistConfig
	DNSWhitelist     DNSWhitelistConfig
	DNSBlacklist     DNSBlacklistConfig
	Helo             HeloConfig
	MailFrom         MailFromConfig
	Recipients       RecipientsConfig
	Commands         CommandsConfig
	Tags             TagsConfig
	Directory        DirectoryConfig
	State            StateConfig
	Admin            AdminConfig
	Bans             BansConfig
	Autoban          AutobanConfig
	// RateLimits are the [[ratelimit]] rules, in the order written.
	RateLimits []RateLimit `key:"ratelimit"`
	Greylist   GreylistConfig
}

// ServerConfig is the [server] section.
type ServerConfig struct {
	// Policy and Milter are listener addresses: "host:port" or "unix:/path".
	Policy, Milter []string
	// Metrics is the Prometheus listener address; "" turns it off.
	Metrics string
	// Hostname is the authserv-id of Authentication-Results headers.
	Hostname string
	// Allow lists the clients that may connect to the listeners.
	Allow      *HostList
	SocketMode fs.FileMode
	// IdleTimeout is the longest wait for a policy client's next request
	// (Postfix's smtpd_policy_service_max_idle is 300 s).
	IdleTimeout time.Duration
	// MilterIdleTimeout is the longest wait for an MTA's next milter
	// packet. A milter connection lives as long as its SMTP session, and
	// both MTAs wait that long between a client's commands (Sendmail's
	// confTO_COMMAND defaults to 1 h), so it must be longer.
	MilterIdleTimeout  time.Duration
	CheckAuthenticated bool
	DelayReject        bool
	// MaxConnections bounds the policy and milter connections open at
	// once, all listeners together; 0 sizes it to the file descriptor
	// limit.
	MaxConnections int
	// MaxConnectionsPerIP bounds the connections of one TCP peer address;
	// 0 sets no bound.
	MaxConnectionsPerIP int
	// ErrorLimit is Domino's SMTPErrorLimit: after this many refusals in
	// one SMTP session the next refusal is 421 4.7.0 and ends it; 0 is off.
	ErrorLimit int
	// Shadow is [server] mode = "shadow": every control's refusals are
	// shadowed (see Config.Shadowed).
	Shadow bool
	// ReloadOnSignal is [server] reload = "signal": the configuration is
	// reloaded only on SIGHUP (systemctl reload), not when its files
	// change.
	ReloadOnSignal bool
	// Pprof serves Go's profiler at /debug/pprof/ on the metrics listener.
	Pprof bool
	// Candidate is the path of a candidate configuration ([server]
	// candidate, relative paths resolved against the file's directory):
	// every session is also decided under it, never answering; "" none.
	Candidate string
	// MetricsAllow lists who may scrape the metrics listener besides
	// Allow: a remote Prometheus, without leave to speak policy or milter.
	MetricsAllow *HostList
}

// LogConfig is the [log] section.
type LogConfig struct {
	Level    slog.Level
	Format   string // "text" or "json"
	Sessions string // "" off, "-" stdout, else a path
	Fail2ban string // "" off, else a path
	// Store is the session store, an SQLite database of the session
	// records that the log command and the web console search; "" off.
	Store string
	// Retention is how long the store keeps a record.
	Retention time.Duration
}

// DNSConfig is the [dns] section.
type DNSConfig struct {
	Resolver                               string
	Timeout, MinTTL, MaxTTL, ProbeInterval time.Duration
	CacheEntries                           int
}

// WhitelistConfig is the [whitelist] section.
type WhitelistConfig struct {
	Hosts *HostList
	Scope WhitelistScope
	// Action is what a match does besides bypassing: ListSkip (silently),
	// ListLog (a log line) or ListTag (a log line and the DNSWL tag header
	// with the value PrivateWhitelist, Domino's $DNSWLSite).
	Action ListAction
}

// ConnectionsConfig is the [connections] section: Domino's "Verify
// connecting host name in DNS" and "Allow connections only from".
type ConnectionsConfig struct {
	// VerifyHostName refuses, at MAIL FROM, a client whose address has no
	// PTR name.
	VerifyHostName bool
	VerifyMessage  string
	// Allow, when not empty, refuses every client it does not match, as
	// [blacklist] does (with its message); [blacklist] still wins.
	Allow *HostList
}

// BlacklistConfig is the [blacklist] section.
type BlacklistConfig struct {
	Hosts   *HostList
	Message string
}

// PrivateBlacklistConfig is the [private_blacklist] section.
type PrivateBlacklistConfig struct {
	Enabled bool
	Hosts   *HostList
	Action  ListAction
	Message string
}

// DNSWhitelistConfig is the [dns_whitelist] section.
type DNSWhitelistConfig struct {
	Enabled bool
	Sites   []DNSSite
	Action  ListAction
}

// DNSBlacklistConfig is the [dns_blacklist] section.
type DNSBlacklistConfig struct {
	Enabled bool
	Sites   []DNSSite
	Action  ListAction
	Message string
	// Score is decision = "score": every site is asked, the weights of
	// the listing ones add up (a DNS whitelist's subtract), and the
	// action applies when the sum reaches Threshold; a sum at or below a
	// negative AllowThreshold counts as DNS-whitelisted.
	Score                     bool `key:"decision"`
	Threshold, AllowThreshold int
}

// HeloConfig is the [helo] section.
type HeloConfig struct {
	RejectEmpty bool
	Deny        *NamePatterns
	Message     string
}

// MailFromConfig is the [mail_from] section.
type MailFromConfig struct {
	Deny *AddressList
	// Allow, when not empty, refuses every other sender (Domino's "Allow
	// messages only from"); Deny wins.
	Allow      *AddressList
	Disconnect bool
	Message    string
	// VerifyDomain refuses a sender whose domain has no MX, A or AAAA
	// record (Domino's "Verify sender's domain in DNS").
	VerifyDomain  bool
	VerifyMessage string
}

// RecipientsConfig is the [recipients] section.
type RecipientsConfig struct {
	Max  int
	Deny *AddressList
	// Allow, when not empty, refuses every other recipient (Domino's
	// "Allow messages intended only for"); Deny wins.
	Allow   *AddressList
	Message string
	// Verify asks [directory] whether a recipient in one of its domains
	// exists, at RCPT: Domino's "Verify that local domain recipients exist
	// in the Domino Directory".
	Verify bool
	// RejectAmbiguous refuses a recipient that names more than one entry
	// (Domino's SMTPDenyNotUniqueRcpt); DenyGroups one that names a group
	// (SMTPDenyMailToGroups). Both need Verify.
	RejectAmbiguous, DenyGroups bool
}

// CommandsConfig is the [commands] section. Names are upper case.
type CommandsConfig struct {
	Deny  map[string]bool
	Allow map[string]bool
}

// Permitted reports whether an SMTP command may be used.
func (c CommandsConfig) Permitted(cmd string) bool {
	if c.Deny[cmd] {
		return false
	}
	return len(c.Allow) == 0 || c.Allow[cmd]
}

// TagsConfig is the [tags] section.
type TagsConfig struct {
	DNSBLHeader, DNSWLHeader string
	AuthenticationResults    bool
}

// Default returns the configuration with every key at its default.
func Default() *Config {
	cfg, err := Parse("", "")
	if err != nil {
		// The defaults are a constant of the program; failing here is a bug.
		panic(fmt.Sprintf("rules: built-in defaults do not load: %v", err))
	}
	return cfg
}

// Load reads and compiles the configuration file at path. All errors are
// returned together as a *multierror.Error of *ConfigError values.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return Parse(path, string(data))
}

// Parse compiles configuration text. path is used to name the file in
// errors and to resolve relative *_file paths; it may be "".
func Parse(path, text string) (*Config, error) {
	raw := defaults()
	lines := newLineIndex(text)
	b := &builder{file: path, dir: filepath.Dir(path), lines: lines}
	if path == "" {
		b.dir = "."
	}
	errs, parsed := decodeRaw(path, text, &raw, lines)
	b.addErrs(errs)
	if !parsed {
		return nil, b.result()
	}
	cfg := b.compile(&raw)
	if err := b.result(); err != nil {
		return nil, err
	}
	cfg.Path = path
	if path != "" {
		cfg.Files = append([]string{path}, cfg.Files...)
	}
	return cfg, nil
}

// Shadowed reports whether a refusal by ctl is shadowed: logged ("would
// refuse"), counted with mode "shadow" and written to the session log, but
// not given; the client is accepted ([server] mode = "shadow", or the
// control's own mode = "shadow"). The error limit follows [server] mode.
func (c *Config) Shadowed(ctl Control) bool {
	return c.Server.Shadow || c.shadowed[ctl]
}
