package rules

// The raw configuration: the TOML file decoded as written, before
// validation. Field tags name the keys; every key is listed in
// config.toml.example and in DESIGN.md §4. defaults() fills every field, so
// a file only states what it changes.

type rawConfig struct {
	Server           rawServer           `toml:"server"`
	Log              rawLog              `toml:"log"`
	DNS              rawDNS              `toml:"dns"`
	Whitelist        rawWhitelist        `toml:"whitelist"`
	Blacklist        rawBlacklist        `toml:"blacklist"`
	Connections      rawConnections      `toml:"connections"`
	PrivateBlacklist rawPrivateBlacklist `toml:"private_blacklist"`
	DNSWhitelist     rawDNSWhitelist     `toml:"dns_whitelist"`
	DNSBlacklist     rawDNSBlacklist     `toml:"dns_blacklist"`
	Helo             rawHelo             `toml:"helo"`
	MailFrom         rawMailFrom         `toml:"mail_from"`
	Recipients       rawRecipients       `toml:"recipients"`
	Commands         rawCommands         `toml:"commands"`
	Tags             rawTags             `toml:"tags"`
	Directory        rawDirectory        `toml:"directory"`
	State            rawState            `toml:"state"`
	Admin            rawAdmin            `toml:"admin"`
	Bans             rawBans             `toml:"bans"`
	Autoban          rawAutoban          `toml:"autoban"`
	RateLimits       []rawRateLimit      `toml:"ratelimit"`
	Greylist         rawGreylist         `toml:"greylist"`
}

type rawGreylist struct {
	Enabled            bool   `toml:"enabled"`
	Delay              string `toml:"delay"`
	RetryWindow        string `toml:"retry_window"`
	Keep               string `toml:"keep"`
	NetV4              int    `toml:"net_v4"`
	NetV6              int    `toml:"net_v6"`
	AutoWhitelistAfter int    `toml:"auto_whitelist_after"`
	ApplyTo            string `toml:"apply_to"`
}

type rawState struct {
	Backend      string   `toml:"backend"`
	File         string   `toml:"file"`
	Addrs        []string `toml:"addrs"`
	MasterName   string   `toml:"master_name"`
	DB           int      `toml:"db"`
	Username     string   `toml:"username"`
	PasswordFile string   `toml:"password_file"`
	TLS          bool     `toml:"tls"`
	CAFile       string   `toml:"ca_file"`
	Prefix       string   `toml:"prefix"`
	Timeout      string   `toml:"timeout"`
	Relay        string   `toml:"relay"`
}

type rawAdmin struct {
	Listen    string `toml:"listen"`
	TokenFile string `toml:"token_file"`
	UsersFile string `toml:"users_file"`
	TLSCert   string `toml:"tls_cert"`
	TLSKey    string `toml:"tls_key"`
}

type rawBans struct {
	Message string `toml:"message"`
	Mode    string `toml:"mode"`
}

type rawAutoban struct {
	Enabled  bool   `toml:"enabled"`
	Refusals int    `toml:"refusals"`
	Within   string `toml:"within"`
	BanFor   string `toml:"ban_for"`
	NetV4    int    `toml:"net_v4"`
	NetV6    int    `toml:"net_v6"`
}

type rawRateLimit struct {
	Name    string `toml:"name"`
	Key     string `toml:"key"`
	Count   string `toml:"count"`
	Limit   int    `toml:"limit"`
	Per     string `toml:"per"`
	Action  string `toml:"action"`
	Message string `toml:"message"`
}

type rawServer struct {
	Policy             []string `toml:"policy"`
	Milter             []string `toml:"milter"`
	Metrics            string   `toml:"metrics"`
	Hostname           string   `toml:"hostname"`
	Allow              []string `toml:"allow"`
	AllowFile          string   `toml:"allow_file"`
	SocketMode         string   `toml:"socket_mode"`
	IdleTimeout        string   `toml:"idle_timeout"`
	MilterIdleTimeout  string   `toml:"milter_idle_timeout"`
	CheckAuthenticated bool     `toml:"check_authenticated"`
	DelayReject        bool     `toml:"delay_reject"`
	MaxConnections     int      `toml:"max_connections"`
	MaxConnectionsIP   int      `toml:"max_connections_per_ip"`
	ErrorLimit         int      `toml:"error_limit"`
	Mode               string   `toml:"mode"`
	Reload             string   `toml:"reload"`
	Pprof              bool     `toml:"pprof"`
	Candidate          string   `toml:"candidate"`
	MetricsAllow       []string `toml:"metrics_allow"`
	MetricsAllowFile   string   `toml:"metrics_allow_file"`
}

type rawLog struct {
	Level     string `toml:"level"`
	Format    string `toml:"format"`
	Sessions  string `toml:"sessions"`
	Fail2ban  string `toml:"fail2ban"`
	Store     string `toml:"store"`
	Retention string `toml:"retention"`
}

type rawDNS struct {
	Resolver      string `toml:"resolver"`
	Timeout       string `toml:"timeout"`
	CacheEntries  int    `toml:"cache_entries"`
	MinTTL        string `toml:"min_ttl"`
	MaxTTL        string `toml:"max_ttl"`
	ProbeInterval string `toml:"probe_interval"`
}

type rawWhitelist struct {
	Hosts     []string `toml:"hosts"`
	HostsFile string   `toml:"hosts_file"`
	Scope     string   `toml:"scope"`
	Action    string   `toml:"action"`
}

type rawConnections struct {
	VerifyHostName bool     `toml:"verify_host_name"`
	VerifyMessage  string   `toml:"verify_message"`
	Allow          []string `toml:"allow"`
	AllowFile      string   `toml:"allow_file"`
	Mode           string   `toml:"mode"`
}

type rawBlacklist struct {
	Hosts     []string `toml:"hosts"`
	HostsFile string   `toml:"hosts_file"`
	Message   string   `toml:"message"`
	Mode      string   `toml:"mode"`
}

type rawPrivateBlacklist struct {
	Enabled   bool     `toml:"enabled"`
	Hosts     []string `toml:"hosts"`
	HostsFile string   `toml:"hosts_file"`
	Action    string   `toml:"action"`
	Message   string   `toml:"message"`
	Mode      string   `toml:"mode"`
}

type rawDNSWhitelist struct {
	Enabled   bool     `toml:"enabled"`
	Sites     []string `toml:"sites"`
	SitesFile string   `toml:"sites_file"`
	Action    string   `toml:"action"`
}

type rawDNSBlacklist struct {
	Enabled   bool     `toml:"enabled"`
	Sites     []string `toml:"sites"`
	SitesFile string   `toml:"sites_file"`
	Action    string   `toml:"action"`
	Message   string   `toml:"message"`
	Mode      string   `toml:"mode"`
	// Decision is "first" (Domino: the first listing decides) or
	// "score" (postscreen: the weights add up).
	Decision       string `toml:"decision"`
	Threshold      int    `toml:"threshold"`
	AllowThreshold int    `toml:"allow_threshold"`
}

type rawHelo struct {
	RejectEmpty bool     `toml:"reject_empty"`
	Deny        []string `toml:"deny"`
	DenyFile    string   `toml:"deny_file"`
	Message     string   `toml:"message"`
	Mode        string   `toml:"mode"`
}

type rawMailFrom struct {
	Deny          []string `toml:"deny"`
	DenyFile      string   `toml:"deny_file"`
	Allow         []string `toml:"allow"`
	AllowFile     string   `toml:"allow_file"`
	Disconnect    bool     `toml:"disconnect"`
	Message       string   `toml:"message"`
	VerifyDomain  bool     `toml:"verify_domain"`
	VerifyMessage string   `toml:"verify_message"`
	Mode          string   `toml:"mode"`
}

type rawRecipients struct {
	Max       int      `toml:"max"`
	Deny      []string `toml:"deny"`
	DenyFile  string   `toml:"deny_file"`
	Allow     []string `toml:"allow"`
	AllowFile string   `toml:"allow_file"`
	Message   string   `toml:"message"`
	Mode      string   `toml:"mode"`
	// Verify, RejectAmbiguous and DenyGroups are Domino's "Verify that
	// local domain recipients exist in the Domino Directory",
	// SMTPDenyNotUniqueRcpt and SMTPDenyMailToGroups, asked of
	// [directory].
	Verify          bool `toml:"verify"`
	RejectAmbiguous bool `toml:"reject_ambiguous"`
	DenyGroups      bool `toml:"deny_groups"`
}

type rawDirectory struct {
	URL              []string `toml:"url"`
	StartTLS         bool     `toml:"start_tls"`
	CAFile           string   `toml:"ca_file"`
	BindDN           string   `toml:"bind_dn"`
	BindPasswordFile string   `toml:"bind_password_file"`
	BaseDN           string   `toml:"base_dn"`
	Filter           string   `toml:"filter"`
	GroupFilter      string   `toml:"group_filter"`
	Domains          []string `toml:"domains"`
	Timeout          string   `toml:"timeout"`
	CacheEntries     int      `toml:"cache_entries"`
	PositiveTTL      string   `toml:"positive_ttl"`
	NegativeTTL      string   `toml:"negative_ttl"`
	Connections      int      `toml:"connections"`
	OnError          string   `toml:"on_error"`
}

type rawCommands struct {
	Deny      []string `toml:"deny"`
	DenyFile  string   `toml:"deny_file"`
	Allow     []string `toml:"allow"`
	AllowFile string   `toml:"allow_file"`
	Mode      string   `toml:"mode"`
}

type rawTags struct {
	DNSBLHeader           string `toml:"dnsbl_header"`
	DNSWLHeader           string `toml:"dnswl_header"`
	AuthenticationResults bool   `toml:"authentication_results"`
}

// defaults returns the configuration used for every key a file leaves out.
// It is the one place defaults are written down.
func defaults() rawConfig {
	r := rawConfig{
		Server: rawServer{
			Policy:      []string{"127.0.0.1:10060"},
			Milter:      []string{"127.0.0.1:10061"},
			Metrics:     "127.0.0.1:10062",
			Allow:       []string{"127.0.0.0/8", "::1"},
			SocketMode:  "0660",
			IdleTimeout: "330s",
			// Sendmail's confTO_COMMAND (1 h) and a margin.
			MilterIdleTimeout: "65m",
			DelayReject:       true,
			Mode:              "enforce",
			Reload:            "auto",
		},
		Log: rawLog{Level: "info", Format: "text", Retention: "30d"},
		DNS: rawDNS{
			Timeout:       "2s",
			CacheEntries:  100000,
			MinTTL:        "60s",
			MaxTTL:        "1h",
			ProbeInterval: "10m",
		},
		Whitelist: rawWhitelist{Scope: "all", Action: "skip"},
		Connections: rawConnections{
			// Domino's text for "Verify connecting host name in DNS".
			VerifyMessage: "Connection from %s rejected for policy reasons. IP address of connecting host not found in reverse DNS lookup.",
		},
		Blacklist:        rawBlacklist{Message: "Connection denied based on policy reason"},
		PrivateBlacklist: rawPrivateBlacklist{Action: "log", Message: "Your host %s was blacklisted."},
		DNSWhitelist:     rawDNSWhitelist{Action: "skip"},
		DNSBlacklist:     rawDNSBlacklist{Action: "log", Message: "Your host %s was found in a DNS blacklist.", Decision: "first", Threshold: 1},
		Helo:             rawHelo{Message: "HELO/EHLO not accepted"},
		MailFrom:         rawMailFrom{Message: "Sender address rejected", VerifyMessage: "Sender address rejected: Domain not found"},
		Recipients:       rawRecipients{Message: "Recipient address rejected"},
		Tags: rawTags{
			DNSBLHeader:           "X-DNSBL-Site",
			DNSWLHeader:           "X-DNSWL-Site",
			AuthenticationResults: true,
		},
		Directory: rawDirectory{
			Filter:       DefaultDirectoryFilter,
			GroupFilter:  DefaultDirectoryGroupFilter,
			Timeout:      "2s",
			CacheEntries: 100000,
			PositiveTTL:  "1h",
			NegativeTTL:  "5m",
			Connections:  4,
			OnError:      "tempfail",
		},
		State:   rawState{Backend: "memory", Prefix: "smtpi:", Timeout: "50ms"},
		Admin:   rawAdmin{Listen: "127.0.0.1:10063"},
		Bans:    rawBans{Message: "Your host %s is banned"},
		Autoban: rawAutoban{Refusals: 5, Within: "10m", BanFor: "1h", NetV4: 32, NetV6: 64},
		// postgrey's defaults.
		Greylist: rawGreylist{Delay: "5m", RetryWindow: "24h", Keep: "36d", NetV4: 24, NetV6: 64, AutoWhitelistAfter: 5, ApplyTo: "all"},
	}
	// Every control enforces its refusals unless told to shadow them.
	for _, m := range []*string{&r.Blacklist.Mode, &r.Connections.Mode, &r.PrivateBlacklist.Mode, &r.DNSBlacklist.Mode,
		&r.Helo.Mode, &r.MailFrom.Mode, &r.Recipients.Mode, &r.Commands.Mode, &r.Bans.Mode} {
		*m = "enforce"
	}
	return r
}
