package rules

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// compileDirectory compiles [directory] and checks it against
// [recipients] verify: verification needs a directory and the domains it
// answers for.
func (b *builder) compileDirectory(raw *rawConfig, cfg *Config) {
	d := raw.Directory
	dc := DirectoryConfig{
		StartTLS:      d.StartTLS,
		BindDN:        strings.TrimSpace(d.BindDN),
		BaseDN:        strings.TrimSpace(d.BaseDN),
		Filter:        d.Filter,
		GroupFilter:   d.GroupFilter,
		Timeout:       b.duration("directory.timeout", d.Timeout),
		CacheEntries:  d.CacheEntries,
		PositiveTTL:   b.duration("directory.positive_ttl", d.PositiveTTL),
		NegativeTTL:   b.duration("directory.negative_ttl", d.NegativeTTL),
		Connections:   d.Connections,
		OnErrorAccept: d.OnError == "accept",
	}
	for _, u := range d.URL {
		u = strings.TrimSpace(u)
		pu, err := url.Parse(u)
		switch {
		case err != nil:
			b.errorf("directory.url", "invalid URL %q: %v", u, err)
			continue
		case pu.Scheme != "ldap" && pu.Scheme != "ldaps":
			b.errorf("directory.url", "invalid URL %q: want ldap://host[:port] or ldaps://host[:port]", u)
			continue
		case pu.Host == "":
			b.errorf("directory.url", "invalid URL %q: no host", u)
			continue
		case pu.Scheme == "ldaps" && d.StartTLS:
			b.errorf("directory.start_tls", "start_tls upgrades ldap:// connections; %q is ldaps:// already", u)
		}
		dc.URLs = append(dc.URLs, u)
	}
	switch d.OnError {
	case "tempfail", "accept":
	default:
		b.errorf("directory.on_error", "unknown value %q: want tempfail or accept", d.OnError)
	}
	if d.CacheEntries < 0 {
		b.errorf("directory.cache_entries", "must be 0 (no cache) or more, not %d", d.CacheEntries)
	}
	if d.Connections < 1 {
		b.errorf("directory.connections", "must be 1 or more, not %d", d.Connections)
	}
	if err := CheckDirectoryFilter(d.Filter); err != nil {
		b.errorf("directory.filter", "%v", err)
	}
	if err := CheckGroupFilter(d.GroupFilter); err != nil {
		b.errorf("directory.group_filter", "%v", err)
	}
	for _, dom := range d.Domains {
		dom = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(dom), "."))
		if dom == "" || strings.ContainsAny(dom, "@ \t*") || !strings.Contains(dom, ".") {
			b.errorf("directory.domains", "invalid domain %q: want a domain name such as \"acme.example\"", dom)
			continue
		}
		dc.Domains = append(dc.Domains, dom)
	}
	if d.CAFile != "" {
		dc.CAFile = b.path(d.CAFile)
		if _, err := os.Stat(dc.CAFile); err != nil {
			b.errorf("directory.ca_file", "%v", err)
		}
	}
	switch {
	case d.BindPasswordFile != "" && dc.BindDN == "":
		b.errorf("directory.bind_password_file", "is set but bind_dn is not: set bind_dn, or remove it to bind anonymously")
	case d.BindPasswordFile == "" && dc.BindDN != "":
		b.errorf("directory.bind_dn", "needs bind_password_file (a file holding the password); leave bind_dn out to bind anonymously")
	case d.BindPasswordFile != "":
		// Empty is refused too: an LDAP bind with a DN and no password is
		// an unauthenticated bind.
		dc.BindPassword, _ = b.secretFile("directory.bind_password_file", d.BindPasswordFile)
	}
	if len(d.URL) > 0 && len(d.Domains) == 0 {
		b.errorf("directory.domains", "no domain: list the local Internet domains whose recipients are verified, e.g. [\"acme.example\"]")
	}
	r := raw.Recipients
	switch {
	case r.Verify && len(d.URL) == 0:
		b.errorf("recipients.verify", "needs a directory to ask: set [directory] url and domains")
	case !r.Verify && r.RejectAmbiguous:
		b.errorf("recipients.reject_ambiguous", "needs verify = true: ambiguity is found by asking the directory")
	case !r.Verify && r.DenyGroups:
		b.errorf("recipients.deny_groups", "needs verify = true: groups are found by asking the directory")
	}
	if len(d.URL) > 0 && !r.Verify {
		b.warns = append(b.warns, "[directory] is set but [recipients] verify is false: no recipient is verified")
	}
	cfg.Directory = dc
}

// path resolves a configured file path against the configuration file's
// directory.
func (b *builder) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(b.dir, p)
}

// String describes the directory for logs and explain, without the
// password.
func (d *DirectoryConfig) String() string {
	if !d.Enabled() {
		return "no directory"
	}
	bind := "anonymously"
	if d.BindDN != "" {
		bind = "as " + d.BindDN
	}
	return fmt.Sprintf("%s (base %q, bound %s, domains %s)", strings.Join(d.URLs, ", "), d.BaseDN, bind, strings.Join(d.Domains, ", "))
}
