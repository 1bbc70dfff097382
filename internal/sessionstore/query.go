package sessionstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// Limits of Filter.Limit.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// readConns is how many queries run at once on one store.
const readConns = 4

// ErrNotFound is Get's error for an id the store does not hold (never
// written, or pruned).
var ErrNotFound = errors.New("no such session")

// Filter selects sessions. Its zero value selects every session; set
// fields narrow the selection (they all apply).
type Filter struct {
	// IP is a client address (192.0.2.7, 2001:db8::1) or a network in
	// CIDR notation (192.0.2.0/24, 2001:db8::/32).
	IP string
	// From is the sender and Rcpt a recipient (accepted or refused),
	// compared without regard to case: an address, or a pattern where
	// * stands for any text ("*@example.com"). From "<>" is the null
	// sender.
	From, Rcpt string
	// Control is the control that decided (blacklist, dns_blacklist,
	// ...).
	Control string
	// Verdict is an action (accept, tag, reject, tempfail), or
	// "refused" for a reject or a tempfail.
	Verdict string
	// Since and Until bound the sessions' time: at or after Since,
	// before Until. A zero time does not bound.
	Since, Until time.Time
	// Before pages: only the sessions whose id is smaller (the last id
	// of the previous page); 0 starts from the newest.
	Before int64
	// Limit is the page's size: DefaultLimit when 0, at most MaxLimit.
	Limit int
}

// FilterError is a filter field that cannot be applied.
type FilterError struct {
	// Field is the filter's field, lowercased: ip, from, rcpt, control,
	// verdict, before or limit.
	Field string
	// Msg says what is wrong with it.
	Msg string
}

// Error implements error.
func (e *FilterError) Error() string { return "filter " + e.Field + ": " + e.Msg }

// Validate reports the first field of f that cannot be applied, as a
// *FilterError, or nil.
func (f Filter) Validate() error {
	_, err := f.compile()
	return err
}

// Page is one answer of Query: the sessions, newest first, and whether
// older ones match too (query again with Before set to the last ID).
type Page struct {
	Entries []Entry
	More    bool
}

// Entry is a stored session.
type Entry struct {
	// ID is the session's row: it grows with every session stored.
	ID     int64
	Record rules.MessageRecord
}

// condition is a compiled filter: a WHERE clause and its arguments.
type condition struct {
	where []string
	args  []any
	limit int
}

func (c *condition) add(clause string, args ...any) {
	c.where = append(c.where, clause)
	c.args = append(c.args, args...)
}

// compile turns f into SQL.
func (f Filter) compile() (condition, error) {
	c := condition{limit: f.Limit}
	switch {
	case f.Limit < 0:
		return c, &FilterError{"limit", fmt.Sprintf("%d: want a positive number", f.Limit)}
	case f.Limit == 0:
		c.limit = DefaultLimit
	case f.Limit > MaxLimit:
		c.limit = MaxLimit
	}
	if f.Before < 0 {
		return c, &FilterError{"before", fmt.Sprintf("%d: want a session id", f.Before)}
	}
	if f.Before > 0 {
		c.add("id < ?", f.Before)
	}
	if ip := strings.TrimSpace(f.IP); ip != "" {
		if err := c.addIP(ip); err != nil {
			return c, err
		}
	}
	if from := strings.TrimSpace(f.From); from != "" {
		if from == "<>" {
			c.add("sender = ''")
		} else {
			c.addAddress("sender", from)
		}
	}
	if rcpt := strings.TrimSpace(f.Rcpt); rcpt != "" {
		if trimBrackets(rcpt) == "" {
			return c, &FilterError{"rcpt", fmt.Sprintf("%q: want an address or a pattern such as *@example.com", rcpt)}
		}
		sub := condition{}
		if sub.addAddress("recipient", rcpt) {
			// A pattern: checked session by session, newest first,
			// through the recipients' primary key, so that a common
			// one stops at the page's end; an address is looked up
			// in the recipient index.
			c.add("EXISTS (SELECT 1 FROM recipients WHERE session = sessions.id AND "+sub.where[0]+")", sub.args...)
		} else {
			c.add("id IN (SELECT session FROM recipients WHERE "+sub.where[0]+")", sub.args...)
		}
	}
	if ctl := strings.TrimSpace(f.Control); ctl != "" {
		c.add("control = ?", strings.ToLower(ctl))
	}
	if v := strings.ToLower(strings.TrimSpace(f.Verdict)); v != "" {
		var a rules.Action
		switch err := a.UnmarshalText([]byte(v)); {
		case v == "refused":
			c.add("action IN (?, ?)", rules.ActionReject.String(), rules.ActionTempfail.String())
		case err != nil:
			return c, &FilterError{"verdict", fmt.Sprintf("%q: want accept, tag, reject, tempfail or refused", f.Verdict)}
		default:
			c.add("action = ?", a.String())
		}
	}
	if !f.Since.IsZero() {
		c.add("time >= ?", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		c.add("time < ?", f.Until.UnixNano())
	}
	return c, nil
}

// addIP selects an address or a network: a network is a range of the
// 16-byte form.
func (c *condition) addIP(ip string) error {
	if strings.Contains(ip, "/") {
		p, err := netip.ParsePrefix(ip)
		if err != nil {
			return &FilterError{"ip", fmt.Sprintf("%q is not an address or a network (CIDR) such as 192.0.2.0/24", ip)}
		}
		p = p.Masked()
		lo := p.Addr().As16()
		hi := lo
		bits := p.Bits()
		if p.Addr().Is4() {
			bits += 96
		}
		for i := bits; i < 128; i++ {
			hi[i/8] |= 1 << (7 - i%8)
		}
		c.add("client_ip BETWEEN ? AND ?", lo[:], hi[:])
		return nil
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return &FilterError{"ip", fmt.Sprintf("%q is not an address or a network (CIDR) such as 192.0.2.0/24", ip)}
	}
	b := a.WithZone("").As16()
	c.add("client_ip = ?", b[:])
	return nil
}

// addAddress selects an address column: equal to v, lowercased, or
// matching it as a pattern when it has a *; it reports which.
func (c *condition) addAddress(col, v string) (pattern bool) {
	v = strings.ToLower(trimBrackets(v))
	if !strings.Contains(v, "*") {
		c.add(col+" = ?", v)
		return false
	}
	// GLOB is case-sensitive, as the lowercased columns need, and its
	// only other wildcards are ? and [, which are escaped.
	var b strings.Builder
	for _, r := range v {
		switch r {
		case '?':
			b.WriteString("[?]")
		case '[':
			b.WriteString("[[]")
		default:
			b.WriteRune(r)
		}
	}
	c.add(col+" GLOB ?", b.String())
	return true
}

// trimBrackets removes the angle brackets around an address: <a@b>.
func trimBrackets(v string) string {
	if len(v) >= 2 && v[0] == '<' && v[len(v)-1] == '>' {
		return v[1 : len(v)-1]
	}
	return v
}

// reader runs the queries, on read-only connections of its own: a Store
// and a Reader share it.
type reader struct {
	db   *sql.DB
	path string
}

// Reader is a session store opened read-only, by another process than
// the server that writes it (the log command).
type Reader struct {
	reader
}

// OpenReader opens the store at path read-only: it never creates the
// file, and a file that is missing or is not a session store is an error
// naming the path.
func OpenReader(path string) (*Reader, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("session store %s: %w", path, err)
	}
	r, err := openReader(abs)
	if err != nil {
		return nil, err
	}
	return &Reader{r}, nil
}

// Close closes the reader's connections.
func (r *Reader) Close() error {
	if err := r.close(); err != nil {
		return fmt.Errorf("session store %s: close: %w", r.path, err)
	}
	return nil
}

func openReader(path string) (reader, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return reader{}, fmt.Errorf("session store %s: %w", path, fs.ErrNotExist)
	case err != nil:
		return reader{}, fmt.Errorf("session store %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return reader{}, fmt.Errorf("session store %s: not a regular file", path)
	}
	db, err := sql.Open("sqlite", dsn(path, fmt.Sprintf("mode=ro&_pragma=busy_timeout(%d)", busyTimeout)))
	if err != nil {
		return reader{}, fmt.Errorf("session store %s: %w", path, err)
	}
	db.SetMaxOpenConns(readConns)
	db.SetMaxIdleConns(readConns)
	var version int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		_ = db.Close()
		return reader{}, fmt.Errorf("session store %s: %w", path, err)
	}
	if version != schemaVersion {
		_ = db.Close()
		return reader{}, fmt.Errorf("session store %s: not a session store of this version (schema version %d, want %d)", path, version, schemaVersion)
	}
	return reader{db: db, path: path}, nil
}

func (r *reader) close() error {
	if r.db == nil {
		return nil
	}
	return r.db.Close()
}

// Query returns the sessions f selects, newest first, a page at a time.
// A filter that cannot be applied is a *FilterError.
func (r *reader) Query(ctx context.Context, f Filter) (Page, error) {
	c, err := f.compile()
	if err != nil {
		return Page{}, err
	}
	q := "SELECT id, record FROM sessions"
	if len(c.where) > 0 {
		q += " WHERE " + strings.Join(c.where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	rows, err := r.db.QueryContext(ctx, q, append(c.args, c.limit+1)...)
	if err != nil {
		return Page{}, fmt.Errorf("session store %s: query: %w", r.path, err)
	}
	defer rows.Close()
	var p Page
	for rows.Next() {
		if len(p.Entries) == c.limit {
			p.More = true
			break
		}
		e, err := scanEntry(rows)
		if err != nil {
			return Page{}, fmt.Errorf("session store %s: query: %w", r.path, err)
		}
		p.Entries = append(p.Entries, e)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("session store %s: query: %w", r.path, err)
	}
	return p, nil
}

// Get returns the session id; ErrNotFound when the store does not hold
// it.
func (r *reader) Get(ctx context.Context, id int64) (Entry, error) {
	e, err := scanEntry(r.db.QueryRowContext(ctx, `SELECT id, record FROM sessions WHERE id = ?`, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Entry{}, fmt.Errorf("session store %s: session %d: %w", r.path, id, ErrNotFound)
	case err != nil:
		return Entry{}, fmt.Errorf("session store %s: session %d: %w", r.path, id, err)
	}
	return e, nil
}

// scanEntry reads a row of id and record.
func scanEntry(s interface{ Scan(...any) error }) (Entry, error) {
	var e Entry
	var record []byte
	if err := s.Scan(&e.ID, &record); err != nil {
		return Entry{}, err
	}
	if err := json.Unmarshal(record, &e.Record); err != nil {
		return Entry{}, fmt.Errorf("decode session %d: %w", e.ID, err)
	}
	return e, nil
}
