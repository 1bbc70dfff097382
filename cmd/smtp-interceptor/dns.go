package main

import (
	"fmt"
	"log/slog"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
)

// dnsListsEnabled reports whether the configuration asks any DNS list.
func dnsListsEnabled(cfg *rules.Config) bool {
	return cfg.DNSWhitelist.Enabled && len(cfg.DNSWhitelist.Sites) > 0 ||
		cfg.DNSBlacklist.Enabled && len(cfg.DNSBlacklist.Sites) > 0
}

// dnsNeeded reports whether the configuration asks DNS anything: a DNS
// list, [connections] verify_host_name or [mail_from] verify_domain.
func dnsNeeded(cfg *rules.Config) bool {
	return dnsListsEnabled(cfg) || cfg.Connections.VerifyHostName || cfg.MailFrom.VerifyDomain
}

// dnsZones lists the zones of every enabled DNS list, whitelists first,
// each once.
func dnsZones(cfg *rules.Config) []string {
	var zones []string
	seen := map[string]bool{}
	add := func(enabled bool, sites []rules.DNSSite) {
		if !enabled {
			return
		}
		for _, s := range sites {
			if !seen[s.Zone] {
				seen[s.Zone] = true
				zones = append(zones, s.Zone)
			}
		}
	}
	add(cfg.DNSWhitelist.Enabled, cfg.DNSWhitelist.Sites)
	add(cfg.DNSBlacklist.Enabled, cfg.DNSBlacklist.Sites)
	return zones
}

// newDNSClient builds the DNS list client of a configuration, reporting
// query latency and suspensions into counters. suspended are the zones a
// previous client had suspended: they stay suspended until a probe of the
// new client passes.
func newDNSClient(cfg *rules.Config, counters *rules.Counters, log *slog.Logger, suspended []string) (*dnsclient.Client, error) {
	c, err := dnsclient.New(dnsclient.Options{
		InitialSuspended: suspended,
		Server:           cfg.DNS.Resolver,
		Timeout:          cfg.DNS.Timeout,
		MinTTL:           cfg.DNS.MinTTL,
		MaxTTL:           cfg.DNS.MaxTTL,
		CacheEntries:     cfg.DNS.CacheEntries,
		Logger:           log,
		Observe:          counters.ObserveDNSQuery,
		OnSuspend:        counters.SetSuspended,
	})
	if err != nil {
		return nil, fmt.Errorf("dns client: %w", err)
	}
	return c, nil
}
