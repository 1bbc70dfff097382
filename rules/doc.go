// Package rules is the smtp-interceptor engine: the configuration schema and
// its loader, the host, address and name matchers, HCL Domino's SMTP inbound
// controls applied in Domino's order, the verdicts they produce, DNS white-
// and blacklist evaluation, and the counters behind the Domino statistics.
//
// The package speaks no MTA protocol. The policy and milter adapters fill a
// [Session] from the wire, call the [Engine] stage that matches the SMTP
// command, and translate the returned [Verdict] back to the wire.
package rules
