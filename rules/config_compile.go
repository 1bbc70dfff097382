package rules

import (
	"bufio"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
)

// builder collects errors and warnings while compiling a raw configuration.
type builder struct {
	file  string
	dir   string
	lines *lineIndex
	errs  []*ConfigError
	warns []string
	files []string
}

func (b *builder) result() error {
	if len(b.errs) == 0 {
		return nil
	}
	sort.SliceStable(b.errs, func(i, j int) bool {
		a, c := b.errs[i], b.errs[j]
		if a.File != c.File {
			return a.File == b.file // the configuration file first, then list files
		}
		return a.Line < c.Line
	})
	var merr *multierror.Error
	for _, e := range b.errs {
		merr = multierror.Append(merr, e)
	}
	merr.ErrorFormat = formatErrors
	return merr
}

func formatErrors(errs []error) string {
	if len(errs) == 1 {
		return errs[0].Error()
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d errors in the configuration:", len(errs))
	for _, e := range errs {
		sb.WriteString("\n  ")
		sb.WriteString(e.Error())
	}
	return sb.String()
}

// errorf records an error for a key, located at the key's line.
func (b *builder) errorf(key, format string, args ...any) {
	b.errs = append(b.errs, &ConfigError{Key: key, File: b.file, Line: b.lines.key(key), Err: fmt.Errorf(format, args...)})
}

func (b *builder) addErrs(errs []*ConfigError) {
	b.errs = append(b.errs, errs...)
}

// entries returns the entries of list key (inline values, located at their
// lines) followed by those of its sibling file key, if set.
func (b *builder) entries(key string, inline []string, fileKey, filePath string) []Entry {
	out := make([]Entry, 0, len(inline))
	for _, v := range inline {
		out = append(out, Entry{Value: strings.TrimSpace(v), Key: key, File: b.file, Line: b.lines.value(key, v)})
	}
	if filePath == "" {
		return out
	}
	p := filePath
	if !filepath.IsAbs(p) {
		p = filepath.Join(b.dir, p)
	}
	fromFile, err := readListFile(p, key)
	if err != nil {
		b.errorf(fileKey, "%v", err)
		return out
	}
	b.files = append(b.files, p)
	return append(out, fromFile...)
}

// readListFile reads one entry a line; "#" starts a comment, blank lines are
// ignored.
func readListFile(path, key string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read list file: %w", err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		out = append(out, Entry{Value: line, Key: key, File: path, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read list file %s line %d: %w", path, n+1, err)
	}
	return out, nil
}

func (b *builder) duration(key, v string) time.Duration {
	d, err := parseDuration(v)
	if err != nil || d <= 0 {
		b.errorf(key, "invalid duration %q: want a positive duration such as \"2s\", \"10m\", \"1h\" or \"36d\"", v)
		return 0
	}
	return d
}

// ParseDuration reads a duration as the configuration writes them:
// time.ParseDuration with days, "36d", "1d12h".
func ParseDuration(v string) (time.Duration, error) { return parseDuration(v) }

// parseDuration is time.ParseDuration with days: "36d", "1d12h".
func parseDuration(v string) (time.Duration, error) {
	if i := strings.IndexByte(v, 'd'); i > 0 {
		days, err := strconv.Atoi(v[:i])
		if err != nil || days < 0 || days > 100000 {
			return 0, fmt.Errorf("bad days in %q", v)
		}
		var rest time.Duration
		if v[i+1:] != "" {
			if rest, err = time.ParseDuration(v[i+1:]); err != nil {
				return 0, err
			}
		}
		return time.Duration(days)*24*time.Hour + rest, nil
	}
	return time.ParseDuration(v)
}

func (b *builder) message(key, v string) string {
	maxVerbs := 1
	if key == "dns_blacklist.message" {
		maxVerbs = 2 // Domino: the client IP, then the DNSBL site
	}
	if err := validateMessage(v, maxVerbs); err != nil {
		b.errorf(key, "%v", err)
	}
	for _, p := range unknownPlaceholders(v) {
		b.warns = append(b.warns, fmt.Sprintf("%s: %s is not a placeholder and is sent as written; the placeholders are {ip}, {site} and {reason}", key, p))
	}
	return v
}

func (b *builder) listAction(key, v string, allowed ...ListAction) ListAction {
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = a.String()
		if v == a.String() {
			return a
		}
	}
	b.errorf(key, "unknown action %q: want one of %s", v, strings.Join(names, ", "))
	return allowed[0]
}

func (b *builder) compile(raw *rawConfig) *Config {
	cfg := &Config{}
	b.compileServer(raw, cfg)
	b.compileLog(raw, cfg)
	b.compileDNS(raw, cfg)
	b.compileLists(raw, cfg)
	b.compileSMTP(raw, cfg)
	b.compileDirectory(raw, cfg)
	b.compileState(raw, cfg)
	b.compileGreylist(raw, cfg)
	cfg.Files = b.files
	b.modes(raw, cfg)
	cfg.Warnings = append(b.warns, commandWarnings(cfg)...)
	return cfg
}

func (b *builder) compileServer(raw *rawConfig, cfg *Config) {
	s := raw.Server
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"server.policy", s.Policy}, {"server.milter", s.Milter}} {
		for _, a := range l.addrs {
			if err := validateListenAddr(a); err != nil {
				b.errs = append(b.errs, &ConfigError{Key: l.key, File: b.file, Line: b.lines.value(l.key, a), Err: err})
			}
		}
	}
	if s.Metrics != "" {
		if err := validateListenAddr(s.Metrics); err != nil || strings.HasPrefix(s.Metrics, "unix:") {
			b.errorf("server.metrics", "invalid address %q: want host:port, or \"\" to turn metrics off", s.Metrics)
		}
	}
	if len(s.Policy) == 0 && len(s.Milter) == 0 {
		b.warns = append(b.warns, "server: neither policy nor milter listeners are configured; serve has nothing to do")
	}
	allow, errs := NewHostList(b.entries("server.allow", s.Allow, "server.allow_file", s.AllowFile))
	b.addErrs(errs)
	mode, err := strconv.ParseUint(s.SocketMode, 8, 32)
	if err != nil || mode > 0o777 {
		b.errorf("server.socket_mode", "invalid file mode %q: want octal permission bits such as \"0660\"", s.SocketMode)
	}
	cfg.Server = ServerConfig{
		Policy:              s.Policy,
		Milter:              s.Milter,
		Metrics:             s.Metrics,
		Hostname:            s.Hostname,
		Allow:               allow,
		SocketMode:          fs.FileMode(mode),
		IdleTimeout:         b.duration("server.idle_timeout", s.IdleTimeout),
		MilterIdleTimeout:   b.duration("server.milter_idle_timeout", s.MilterIdleTimeout),
		CheckAuthenticated:  s.CheckAuthenticated,
		DelayReject:         s.DelayReject,
		MaxConnections:      s.MaxConnections,
		MaxConnectionsPerIP: s.MaxConnectionsIP,
		ErrorLimit:          s.ErrorLimit,
	}
	cfg.Server.Pprof = s.Pprof
	if s.Candidate != "" {
		cfg.Server.Candidate = s.Candidate
		if !filepath.IsAbs(s.Candidate) {
			cfg.Server.Candidate = filepath.Join(b.dir, s.Candidate)
		}
		b.files = append(b.files, cfg.Server.Candidate) // watched: an edit reloads both
	}
	mallowList, errs := NewHostList(b.entries("server.metrics_allow", s.MetricsAllow, "server.metrics_allow_file", s.MetricsAllowFile))
	b.addErrs(errs)
	cfg.Server.MetricsAllow = mallowList
	switch s.Reload {
	case "auto":
	case "signal":
		cfg.Server.ReloadOnSignal = true
	default:
		b.errorf("server.reload", "unknown reload %q: want auto (when the files change, and on SIGHUP) or signal (on SIGHUP only)", s.Reload)
	}
	switch s.Mode {
	case "enforce":
	case "shadow":
		cfg.Server.Shadow = true
	default:
		b.errorf("server.mode", "unknown mode %q: want enforce or shadow", s.Mode)
	}
	if s.ErrorLimit < 0 {
		b.errorf("server.error_limit", "must be 0 (off) or more, not %d", s.ErrorLimit)
	}
	if d := cfg.Server.MilterIdleTimeout; d > 0 && d < time.Hour && len(s.Milter) > 0 {
		b.warns = append(b.warns, fmt.Sprintf("server.milter_idle_timeout %s is shorter than Sendmail's confTO_COMMAND (1h by default): "+
			"a Sendmail session idle that long loses its milter (with F=T every later command then gets 451)", d))
	}
	if s.MaxConnections < 0 {
		b.errorf("server.max_connections", "must be 0 (sized to the file descriptor limit) or more, not %d", s.MaxConnections)
	}
	if s.MaxConnectionsIP < 0 {
		b.errorf("server.max_connections_per_ip", "must be 0 (no limit) or more, not %d", s.MaxConnectionsIP)
	}
	if cfg.Server.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.Server.Hostname = h
		} else {
			cfg.Server.Hostname = "localhost"
		}
	}
}

func validateListenAddr(a string) error {
	if rest, ok := strings.CutPrefix(a, "unix:"); ok {
		if rest == "" || !filepath.IsAbs(rest) {
			return fmt.Errorf("invalid unix socket %q: want unix:/absolute/path", a)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port or unix:/path", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port in %q", a)
	}
	_ = host
	return nil
}

func (b *builder) compileLog(raw *rawConfig, cfg *Config) {
	l := raw.Log
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil || !oneOf(strings.ToLower(l.Level), "debug", "info", "warn", "error") {
		b.errorf("log.level", "unknown level %q: want debug, info, warn or error", l.Level)
	}
	if !oneOf(l.Format, "text", "json") {
		b.errorf("log.format", "unknown format %q: want text or json", l.Format)
	}
	cfg.Log = LogConfig{Level: level, Format: l.Format, Sessions: l.Sessions, Fail2ban: l.Fail2ban,
		Retention: b.duration("log.retention", l.Retention)}
	switch l.Store {
	case "":
	case "-":
		b.errorf("log.store", "the session store is a database file, not standard output: give a path such as \"/var/lib/smtp-interceptor/sessions.db\"")
	default:
		cfg.Log.Store = b.path(l.Store)
	}
}

func oneOf(v string, set ...string) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

func (b *builder) compileDNS(raw *rawConfig, cfg *Config) {
	d := raw.DNS
	if d.Resolver != "" {
		if _, _, err := net.SplitHostPort(d.Resolver); err != nil {
			b.errorf("dns.resolver", "invalid resolver %q: want host:port, e.g. \"127.0.0.1:53\"", d.Resolver)
		}
	}
	if d.CacheEntries < 0 {
		b.errorf("dns.cache_entries", "must be 0 (no cache) or more, not %d", d.CacheEntries)
	}
	cfg.DNS = DNSConfig{
		Resolver:      d.Resolver,
		Timeout:       b.duration("dns.timeout", d.Timeout),
		MinTTL:        b.duration("dns.min_ttl", d.MinTTL),
		MaxTTL:        b.duration("dns.max_ttl", d.MaxTTL),
		ProbeInterval: b.duration("dns.probe_interval", d.ProbeInterval),
		CacheEntries:  d.CacheEntries,
	}
	if cfg.DNS.MinTTL > 0 && cfg.DNS.MaxTTL > 0 && cfg.DNS.MinTTL > cfg.DNS.MaxTTL {
		b.errorf("dns.min_ttl", "min_ttl %s is above max_ttl %s", cfg.DNS.MinTTL, cfg.DNS.MaxTTL)
	}
}

func (b *builder) compileLists(raw *rawConfig, cfg *Config) {
	hosts := func(key string, inline []string, file string) *HostList {
		h, errs := NewHostList(b.entries(key, inline, strings.TrimSuffix(key, "hosts")+"hosts_file", file))
		b.addErrs(errs)
		return h
	}

	w := raw.Whitelist
	cfg.Whitelist.Hosts = hosts("whitelist.hosts", w.Hosts, w.HostsFile)
	switch w.Scope {
	case "all":
		cfg.Whitelist.Scope = ScopeAll
	case "lists":
		cfg.Whitelist.Scope = ScopeLists
	default:
		b.errorf("whitelist.scope", "unknown scope %q: want all or lists", w.Scope)
	}
	cfg.Whitelist.Action = b.listAction("whitelist.action", w.Action, ListSkip, ListLog, ListTag)

	c := raw.Connections
	cfg.Connections = ConnectionsConfig{
		VerifyHostName: c.VerifyHostName,
		VerifyMessage:  b.message("connections.verify_message", c.VerifyMessage),
	}
	callow, errs := NewHostList(b.entries("connections.allow", c.Allow, "connections.allow_file", c.AllowFile))
	b.addErrs(errs)
	cfg.Connections.Allow = callow

	bl := raw.Blacklist
	cfg.Blacklist = BlacklistConfig{
		Hosts:   hosts("blacklist.hosts", bl.Hosts, bl.HostsFile),
		Message: b.message("blacklist.message", bl.Message),
	}

	p := raw.PrivateBlacklist
	cfg.PrivateBlacklist = PrivateBlacklistConfig{
		Enabled: p.Enabled,
		Hosts:   hosts("private_blacklist.hosts", p.Hosts, p.HostsFile),
		Action:  b.listAction("private_blacklist.action", p.Action, ListLog, ListTag, ListReject, ListGreylist),
		Message: b.message("private_blacklist.message", p.Message),
	}
	if !p.Enabled && cfg.PrivateBlacklist.Hosts.Len() > 0 {
		b.warns = append(b.warns, "private_blacklist: hosts are listed but enabled = false; the list is not applied")
	}

	dw := raw.DNSWhitelist
	cfg.DNSWhitelist = DNSWhitelistConfig{
		Enabled: dw.Enabled,
		Sites:   b.sites("dns_whitelist.sites", dw.Sites, "dns_whitelist.sites_file", dw.SitesFile),
		Action:  b.listAction("dns_whitelist.action", dw.Action, ListSkip, ListLog, ListTag),
	}
	if dw.Enabled && len(cfg.DNSWhitelist.Sites) == 0 {
		b.warns = append(b.warns, "dns_whitelist: enabled but no sites are configured")
	}

	db := raw.DNSBlacklist
	cfg.DNSBlacklist = DNSBlacklistConfig{
		Enabled:   db.Enabled,
		Sites:     b.sites("dns_blacklist.sites", db.Sites, "dns_blacklist.sites_file", db.SitesFile),
		Action:    b.listAction("dns_blacklist.action", db.Action, ListLog, ListTag, ListReject, ListGreylist),
		Message:   b.message("dns_blacklist.message", db.Message),
		Threshold: db.Threshold, AllowThreshold: db.AllowThreshold,
	}
	switch db.Decision {
	case "first":
		for _, sites := range [][]DNSSite{cfg.DNSWhitelist.Sites, cfg.DNSBlacklist.Sites} {
			for _, s := range sites {
				if s.Weighted {
					b.warns = append(b.warns, fmt.Sprintf("DNS list site %q has a weight, which counts only with [dns_blacklist] decision = \"score\"", s.Name))
				}
			}
		}
	case "score":
		cfg.DNSBlacklist.Score = true
		if db.Threshold < 1 {
			b.errorf("dns_blacklist.threshold", "must be 1 or more, not %d: a client no list lists scores 0", db.Threshold)
		}
		if db.AllowThreshold > 0 {
			b.errorf("dns_blacklist.allow_threshold", "must be 0 (off) or negative, not %d", db.AllowThreshold)
		}
	default:
		b.errorf("dns_blacklist.decision", "unknown decision %q: want first or score", db.Decision)
	}
	if db.Enabled && len(cfg.DNSBlacklist.Sites) == 0 {
		b.warns = append(b.warns, "dns_blacklist: enabled but no sites are configured")
	}
}

func (b *builder) sites(key string, inline []string, fileKey, file string) []DNSSite {
	var out []DNSSite
	seen := map[string]bool{}
	for _, e := range b.entries(key, inline, fileKey, file) {
		s, err := ParseDNSSite(e)
		if err != nil {
			b.errs = append(b.errs, err)
			continue
		}
		if seen[s.Name] {
			b.errs = append(b.errs, e.errorf("site %q is listed twice", s.Name))
			continue
		}
		seen[s.Name] = true
		out = append(out, s)
	}
	return out
}

func (b *builder) compileSMTP(raw *rawConfig, cfg *Config) {
	h := raw.Helo
	deny, errs := NewNamePatterns(b.entries("helo.deny", h.Deny, "helo.deny_file", h.DenyFile))
	b.addErrs(errs)
	cfg.Helo = HeloConfig{RejectEmpty: h.RejectEmpty, Deny: deny, Message: b.message("helo.message", h.Message)}

	m := raw.MailFrom
	mdeny, errs := NewAddressList(b.entries("mail_from.deny", m.Deny, "mail_from.deny_file", m.DenyFile))
	b.addErrs(errs)
	mallow, errs := NewAddressList(b.entries("mail_from.allow", m.Allow, "mail_from.allow_file", m.AllowFile))
	b.addErrs(errs)
	cfg.MailFrom = MailFromConfig{Deny: mdeny, Allow: mallow, Disconnect: m.Disconnect,
		Message:      b.message("mail_from.message", m.Message),
		VerifyDomain: m.VerifyDomain, VerifyMessage: b.message("mail_from.verify_message", m.VerifyMessage)}

	r := raw.Recipients
	if r.Max < 0 {
		b.errorf("recipients.max", "must be 0 (no limit) or more, not %d", r.Max)
	}
	rdeny, errs := NewAddressList(b.entries("recipients.deny", r.Deny, "recipients.deny_file", r.DenyFile))
	b.addErrs(errs)
	rallow, errs := NewAddressList(b.entries("recipients.allow", r.Allow, "recipients.allow_file", r.AllowFile))
	b.addErrs(errs)
	cfg.Recipients = RecipientsConfig{Max: r.Max, Deny: rdeny, Allow: rallow, Message: b.message("recipients.message", r.Message),
		Verify: r.Verify, RejectAmbiguous: r.RejectAmbiguous, DenyGroups: r.DenyGroups}

	c := raw.Commands
	cfg.Commands = CommandsConfig{
		Deny:  b.commands(b.entries("commands.deny", c.Deny, "commands.deny_file", c.DenyFile)),
		Allow: b.commands(b.entries("commands.allow", c.Allow, "commands.allow_file", c.AllowFile)),
	}
	if len(cfg.Commands.Allow) > 0 {
		for _, need := range []string{"MAIL", "RCPT", "DATA"} {
			if !cfg.Commands.Allow[need] {
				b.warns = append(b.warns, fmt.Sprintf("commands.allow does not list %s: no mail can be received", need))
			}
		}
	}

	t := raw.Tags
	for _, hk := range []struct{ key, v string }{{"tags.dnsbl_header", t.DNSBLHeader}, {"tags.dnswl_header", t.DNSWLHeader}} {
		if !validHeaderName(hk.v) {
			b.errorf(hk.key, "invalid header name %q: want printable ASCII without spaces or colons, e.g. \"X-DNSBL-Site\"", hk.v)
		}
	}
	cfg.Tags = TagsConfig{DNSBLHeader: t.DNSBLHeader, DNSWLHeader: t.DNSWLHeader, AuthenticationResults: t.AuthenticationResults}
}

func (b *builder) commands(entries []Entry) map[string]bool {
	if len(entries) == 0 {
		return nil
	}
	out := make(map[string]bool, len(entries))
	for _, e := range entries {
		v := strings.ToUpper(e.Value)
		if !validCommand(v) {
			b.errs = append(b.errs, e.errorf("invalid SMTP command %q: want a command verb such as VRFY, EXPN or ETRN", e.Value))
			continue
		}
		out[v] = true
	}
	return out
}

func validCommand(v string) bool {
	if v == "" || len(v) > 32 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c == '-' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func validHeaderName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// modes compiles the mode key of every control section.
func (b *builder) modes(raw *rawConfig, cfg *Config) {
	for _, m := range []struct {
		ctl  Control
		mode string
	}{
		{ControlBlacklist, raw.Blacklist.Mode}, {ControlConnections, raw.Connections.Mode},
		{ControlPrivateBlacklist, raw.PrivateBlacklist.Mode}, {ControlDNSBlacklist, raw.DNSBlacklist.Mode},
		{ControlHelo, raw.Helo.Mode}, {ControlMailFrom, raw.MailFrom.Mode},
		{ControlRecipients, raw.Recipients.Mode}, {ControlCommands, raw.Commands.Mode},
		{ControlBans, raw.Bans.Mode},
	} {
		switch m.mode {
		case "enforce":
		case "shadow":
			if cfg.shadowed == nil {
				cfg.shadowed = make(map[Control]bool)
			}
			cfg.shadowed[m.ctl] = true
		default:
			b.errorf(string(m.ctl)+".mode", "unknown mode %q: want enforce or shadow", m.mode)
		}
	}
}
