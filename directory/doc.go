// Package directory verifies mail recipients against the HCL Domino
// Directory over Domino's LDAP service: it implements [rules.Directory]
// ([recipients] verify) with a pool of bound connections, URL failover,
// a bounded answer cache and one shared query per address in flight.
//
// # What it assumes of Domino's LDAP schema
//
// Domino's LDAP task serves the Directory (names.nsf, and Directory
// Assistance's secondary directories) as one tree whose top is the
// organisation (o=acme) or the root: base_dn "" searches all of it. It
// publishes
//
//   - a Person document as objectClass dominoPerson (below inetOrgPerson),
//     with mail the Internet address and every value of the User name field
//     (the common name, alternate names and alternate Internet addresses)
//     as a value of cn, so [DefaultFilter] (|(mail={addr})(cn={addr}))
//     finds a person by any of their addresses; uid is the short name;
//   - a Group document as objectClass dominoGroup with cn, mail and member;
//     [DefaultGroupFilter] also counts groupOfNames (a standard group in a
//     secondary directory) as a group;
//   - mail-in databases and resources as entries with mail too, which
//     count as found.
//
// Attribute values are matched by the server, without case (mail and cn
// use caseIgnore matching rules). An address that more than one entry
// carries is ambiguous: Domino's router would refuse it, so the search
// asks for two entries at most.
//
// # Group filter
//
// group_filter is not sent to the server: it is evaluated on the
// attributes of the entries found, which are the only attributes the
// search asks for. So it may use only &, |, !, equality and presence, and
// names and values are compared without case. It sees the values stored,
// not the class hierarchy: (objectClass=groupOfNames) does not match an
// entry whose objectClass lists only a subclass. Prefer objectClass tests:
// (member=*) would fetch every member of every group found.
//
// # Failures
//
// Timeout bounds a whole lookup: waiting for a pooled connection,
// connecting, StartTLS, binding and searching. The URLs are tried in
// order; each but the last gets an equal share of what is left of the
// timeout to connect, upgrade and bind, so a hung first server leaves time
// for the next. When no URL can be reached the directory is down: one
// warning is logged, and for a backoff of 100ms doubling to 5s lookups
// fail at once instead of waiting; the first lookup after it tries again,
// and its success logs one warning that the directory is reachable again.
// A server that answers with an LDAP error (a failed bind, no such base
// DN) is reachable: the lookup fails, but there is no backoff.
package directory
