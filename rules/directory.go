package rules

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// DefaultDirectoryFilter is [directory] filter's default. Domino's LDAP
// service publishes a person's Internet address as mail and every value of
// the User name field, alternate Internet addresses included, as cn; a
// group's Internet address is its mail.
const DefaultDirectoryFilter = "(|(mail={addr})(cn={addr}))"

// DefaultDirectoryGroupFilter is [directory] group_filter's default: the
// object classes of Domino groups as its LDAP service publishes them.
const DefaultDirectoryGroupFilter = "(|(objectClass=dominoGroup)(objectClass=groupOfNames))"

// ExpandDirectoryFilter puts an address into a filter: {addr} becomes the
// whole address, {local} its local part and {domain} its domain, each
// escaped per RFC 4515 first, so that no address can change the filter's
// structure.
func ExpandDirectoryFilter(filter, addr string) string {
	local, domain := addr, ""
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		local, domain = addr[:at], addr[at+1:]
	}
	var b strings.Builder
	b.Grow(len(filter) + 2*len(addr))
	for {
		i := strings.IndexByte(filter, '{')
		if i < 0 {
			b.WriteString(filter)
			return b.String()
		}
		b.WriteString(filter[:i])
		filter = filter[i:]
		switch {
		case strings.HasPrefix(filter, "{addr}"):
			b.WriteString(ldap.EscapeFilter(addr))
			filter = filter[len("{addr}"):]
		case strings.HasPrefix(filter, "{local}"):
			b.WriteString(ldap.EscapeFilter(local))
			filter = filter[len("{local}"):]
		case strings.HasPrefix(filter, "{domain}"):
			b.WriteString(ldap.EscapeFilter(domain))
			filter = filter[len("{domain}"):]
		default:
			b.WriteByte('{')
			filter = filter[1:]
		}
	}
}

// CheckDirectoryFilter reports whether filter is a valid search filter
// once an address is put in, and uses the address.
func CheckDirectoryFilter(filter string) error {
	if !strings.Contains(filter, "{addr}") && !strings.Contains(filter, "{local}") {
		return errors.New("filter does not use the address: put {addr} (or {local} and {domain}) in it")
	}
	if _, err := ldap.CompileFilter(ExpandDirectoryFilter(filter, "a*)(b=*@example.com")); err != nil {
		return fmt.Errorf("invalid LDAP filter %q: %w", filter, err)
	}
	return nil
}

// CheckGroupFilter reports whether filter is a valid group filter: an LDAP
// filter that uses only &, |, !, equality and presence, since it is
// evaluated on the attributes of the entries found, not by the server.
func CheckGroupFilter(filter string) error {
	p, err := ldap.CompileFilter(filter)
	if err != nil {
		return fmt.Errorf("invalid LDAP filter %q: %w", filter, err)
	}
	var walk func(p *ber.Packet) error
	walk = func(p *ber.Packet) error {
		switch p.Tag {
		case ldap.FilterAnd, ldap.FilterOr, ldap.FilterNot:
			for _, c := range p.Children {
				if err := walk(c); err != nil {
					return err
				}
			}
			return nil
		case ldap.FilterEqualityMatch, ldap.FilterPresent:
			return nil
		}
		return fmt.Errorf("group filter %q uses %s: only &, |, !, equality (a=b) and presence (a=*) are evaluated", filter, ldap.FilterMap[uint64(p.Tag)])
	}
	return walk(p)
}

// Directory answers [recipients] verify: which entries of the Domino
// Directory (over LDAP) a recipient address names. It is built in cmd/
// from [directory] and passed to the engine, as DNS is; the directory
// package implements it against a real LDAP server, MemoryDirectory is
// the fake for unit tests.
//
// An error means the question could not be answered (the directory is
// unreachable, a bind failed, the search timed out): the engine then
// tempfails the recipient (451 4.4.3) or accepts it, per [directory]
// on_error, and never refuses it.
type Directory interface {
	// LookupRecipient returns the entries whose mail address (or alternate
	// address) is addr. addr is the recipient as the client gave it,
	// without angle brackets; the implementation folds case.
	LookupRecipient(ctx context.Context, addr string) (DirectoryAnswer, error)
}

// DirectoryAnswer is what a Directory found for one address.
type DirectoryAnswer struct {
	// Query is the LDAP filter sent (or, from the cache, the one that was
	// sent), with the address escaped per RFC 4515; for explain.
	Query string
	// Entries are the entries found, in the order the server sent them.
	// Callers must not modify the slice: it may be shared with a cache.
	Entries []DirectoryEntry
	// Cached says the answer came from the cache, not from the server.
	Cached bool
}

// DirectoryEntry is one entry found.
type DirectoryEntry struct {
	// DN is the entry's distinguished name.
	DN string
	// Group says the entry matches [directory] group_filter.
	Group bool
}

// DirectoryResult classifies an answer, as the metrics and the engine name
// it.
type DirectoryResult string

// The results of a directory lookup. Cached is only a metrics label: a
// cache hit is counted as cached, not again as what it found.
const (
	DirectoryFound     DirectoryResult = "found"
	DirectoryUnknown   DirectoryResult = "unknown"
	DirectoryAmbiguous DirectoryResult = "ambiguous"
	DirectoryGroup     DirectoryResult = "group"
	DirectoryError     DirectoryResult = "error"
	DirectoryCached    DirectoryResult = "cached"
)

// Result classifies the answer: no entry is unknown, more than one
// ambiguous, one group entry a group, one other entry found.
func (a DirectoryAnswer) Result() DirectoryResult {
	switch {
	case len(a.Entries) == 0:
		return DirectoryUnknown
	case len(a.Entries) > 1:
		return DirectoryAmbiguous
	case a.Entries[0].Group:
		return DirectoryGroup
	}
	return DirectoryFound
}

// DirectoryConfig is the [directory] section: where the Domino Directory
// is and how to ask it. It is off (no URL) by default.
type DirectoryConfig struct {
	// URLs are ldap:// or ldaps:// addresses, tried in order (failover).
	URLs []string `key:"url"`
	// StartTLS upgrades ldap:// connections with the StartTLS operation.
	StartTLS bool
	// CAFile is a PEM file of the certificate authorities trusted for
	// ldaps:// and StartTLS; "" uses the system's.
	CAFile string
	// BindDN is the DN bound as; "" binds anonymously.
	BindDN string
	// BindPassword is read from bind_password_file when the configuration
	// is loaded (trailing newline removed). Never logged or printed.
	BindPassword Secret `key:"bind_password_file"`
	// BaseDN is where searches start ("" is the root, as Domino's LDAP
	// serves its Directory).
	BaseDN string
	// Filter is the search filter; {addr} is the whole address, {local}
	// its local part and {domain} its domain, each escaped per RFC 4515
	// before substitution.
	Filter string
	// GroupFilter says which entries found are groups. It is evaluated on
	// the entries' attributes, so it may use only &, |, !, equality and
	// presence.
	GroupFilter string
	// Domains are the local Internet domains verified, lower case; a
	// recipient in another domain is not looked up.
	Domains []string
	// Timeout bounds one lookup: connecting, binding and searching.
	Timeout time.Duration
	// CacheEntries bounds the answer cache; 0 turns it off.
	CacheEntries int
	// PositiveTTL is how long an answer with entries is cached,
	// NegativeTTL one without. Errors are not cached.
	PositiveTTL, NegativeTTL time.Duration
	// Connections is the size of the pool of bound connections.
	Connections int
	// OnErrorAccept is on_error = "accept": a recipient the directory
	// could not answer for is accepted (and logged) instead of tempfailed.
	OnErrorAccept bool `key:"on_error"`
}

// Secret is a password read from a file: it prints as "(hidden)", so no
// log line, diff or explain output shows it.
type Secret string

// String hides the secret.
func (Secret) String() string { return "(hidden)" }

// GoString hides the secret from %#v too.
func (Secret) GoString() string { return `"(hidden)"` }

// Enabled reports whether a directory is configured.
func (d *DirectoryConfig) Enabled() bool { return len(d.URLs) > 0 }

// Local reports whether addr's domain is one of Domains (compared without
// case); an address without @ is not local.
func (d *DirectoryConfig) Local(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	dom := strings.TrimSuffix(addr[at+1:], ".")
	for _, l := range d.Domains {
		if strings.EqualFold(dom, l) {
			return true
		}
	}
	return false
}

// MemoryDirectory is a Directory held in memory, for tests: addresses are
// set with their entries, or made to fail.
type MemoryDirectory struct {
	mu      sync.Mutex
	entries map[string][]DirectoryEntry
	errs    map[string]error
	all     error
	// Lookups counts the lookups asked.
	lookups int
}

// NewMemoryDirectory returns an empty directory: every address is unknown.
func NewMemoryDirectory() *MemoryDirectory {
	return &MemoryDirectory{entries: map[string][]DirectoryEntry{}, errs: map[string]error{}}
}

// Set gives addr the entries entries (none: unknown).
func (m *MemoryDirectory) Set(addr string, entries ...DirectoryEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[strings.ToLower(addr)] = entries
}

// Fail makes lookups of addr return err; addr "" makes every lookup fail
// (nil err: none).
func (m *MemoryDirectory) Fail(addr string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if addr == "" {
		m.all = err
		return
	}
	m.errs[strings.ToLower(addr)] = err
}

// Lookups returns how many lookups were asked.
func (m *MemoryDirectory) Lookups() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookups
}

// LookupRecipient implements Directory.
func (m *MemoryDirectory) LookupRecipient(_ context.Context, addr string) (DirectoryAnswer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	a := strings.ToLower(addr)
	q := "(mail=" + a + ")"
	if m.all != nil {
		return DirectoryAnswer{Query: q}, m.all
	}
	if err := m.errs[a]; err != nil {
		return DirectoryAnswer{Query: q}, err
	}
	return DirectoryAnswer{Query: q, Entries: m.entries[a]}, nil
}
