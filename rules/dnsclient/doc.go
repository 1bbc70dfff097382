// Package dnsclient is the DNS list client of smtp-interceptor: it
// implements [rules.DNSLists] over github.com/miekg/dns, and
// [rules.HostDNS] (PTR names of a client, whether a sender's domain can
// receive mail) through the same resolver and cache.
//
// A lookup follows RFC 5782 §2: the client address, its octets reversed
// (IPv4) or its 32 nibbles reversed (IPv6, RFC 5782 §2.4), is prepended to
// the list's zone and asked for A records; the TXT record of a listed
// address is fetched as the listing's reason. Queries go to one recursive
// resolver over UDP, retried over TCP when the answer is truncated.
//
// Answers are cached per (zone, address) for their TTL, negative answers
// for the SOA minimum (RFC 2308 §5), clamped to [Options.MinTTL,
// Options.MaxTTL]; concurrent lookups of the same (zone, address) share one
// query. What an answer means (filters, error codes, list order) is the
// engine's business, not the client's.
//
// Health probes (RFC 5782 §5) check that a list lists the test entry
// 127.0.0.2 and does not list 127.0.0.1. A list that answers for 127.0.0.1
// lists everyone, or refuses everyone with an error code; it is suspended,
// and Query fails with [rules.ErrSiteSuspended] without asking it, until a
// later probe passes. A list is probed before this client first uses it,
// then by RunProber every probe interval; between probes, a hit rate that
// jumps (see HitRateWindow) suspends it at once and probes it. A client
// that replaces another starts with its suspensions
// (Options.InitialSuspended).
//
// ReverseNames asks for an address's PTR records (in-addr.arpa, ip6.arpa).
// DomainExists asks for a domain's MX records, then, when it has none, its
// A and then AAAA records (RFC 5321 §5.1); a null MX (RFC 7505) says the
// domain receives no mail. Their answers are cached as a list's are
// (positive for the TTL, negative for the SOA minimum, clamped; errors
// never), in the same cache, under the same bound, and concurrent lookups
// of the same question share one query. No probe or suspension applies to
// them: they ask no list.
//
// A resolver that stops answering is marked down after ResolverDownAfter
// consecutive timeouts: queries then fail at once with [ErrResolverDown]
// instead of each waiting for the timeout, until one let through after
// ResolverDownHold is answered. Every question counts, a HostDNS one too.
package dnsclient
