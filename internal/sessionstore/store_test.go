package sessionstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// base is the tests' clock: records are placed around it.
var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// logged counts a store's log lines per level, and keeps their messages.
type logged struct {
	mu   sync.Mutex
	n    map[slog.Level]int
	msgs []string
}

func newLogged() *logged { return &logged{n: map[slog.Level]int{}} }

func (h *logged) Enabled(context.Context, slog.Level) bool { return true }
func (h *logged) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logged) WithGroup(string) slog.Handler            { return h }
func (h *logged) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Level]++
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	return nil
}

func (h *logged) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[l]
}

// openStore opens a store in a new directory (unless o.Path is set),
// closed when the test ends.
func openStore(t *testing.T, o sessionstore.Options) *sessionstore.Store {
	t.Helper()
	if o.Path == "" {
		o.Path = filepath.Join(t.TempDir(), "sessions.db")
	}
	if o.Logger == nil {
		o.Logger = testutil.Logger(t)
	}
	if o.Now == nil {
		o.Now = testutil.NewClock(base).Now
	}
	s, err := sessionstore.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// record is a minimal record of session id at time at.
func record(id string, at time.Time) *rules.MessageRecord {
	from := "sender@example.com"
	return &rules.MessageRecord{
		Time: at, Session: id, ClientIP: "192.0.2.1", MailFrom: &from,
		Recipients: []string{"user@domino.test"}, Stage: rules.StageData, Action: rules.ActionAccept,
	}
}

// waitWritten waits until the store has written n records in all.
func waitWritten(t *testing.T, s *sessionstore.Store, n uint64) {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("%d records written", n), func() bool { return s.Stats().Written >= n })
}

// all returns every stored session's id (rules.MessageRecord.Session),
// newest first.
func all(t *testing.T, q interface {
	Query(context.Context, sessionstore.Filter) (sessionstore.Page, error)
}) []string {
	t.Helper()
	var ids []string
	f := sessionstore.Filter{Limit: sessionstore.MaxLimit}
	for {
		p, err := q.Query(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			ids = append(ids, e.Record.Session)
		}
		if !p.More {
			return ids
		}
		f.Before = p.Entries[len(p.Entries)-1].ID
	}
}

// rawDB opens the database file directly, for what the API does not
// show (the schema, the recipients table).
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func count(t *testing.T, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRoundTrip: a record with every field comes back whole, through the
// store and through a reader; Get finds it by id and not another; the
// database is in WAL mode and has no column for a body.
func TestRoundTrip(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "sessions.db")
	s := openStore(t, sessionstore.Options{Path: path})
	from := "Alice@Example.COM"
	want := rules.MessageRecord{
		Time:         base.Add(1500 * time.Nanosecond),
		Session:      "4F1A2B3C",
		ClientIP:     "2001:db8::25",
		ClientName:   "mx.example.com",
		ClientPTR:    "mx.example.com",
		Helo:         "mx.example.com",
		AuthUser:     "alice",
		MailFrom:     &from,
		Recipients:   []string{"Bob@Domino.test", "carol@domino.test"},
		Refused:      []string{"nobody@domino.test"},
		Stage:        rules.StageData,
		Action:       rules.ActionTag,
		Code:         250,
		EnhancedCode: "2.0.0",
		Text:         "ok \"quoted\" \x01 text",
		Control:      rules.ControlDNSBlacklist,
		WouldRefuse: &rules.ShadowRecord{Stage: rules.StageRcpt, Code: 550, EnhancedCode: "5.7.1",
			Text: "would refuse", Control: rules.ControlBlacklist, Reason: "hosts 2001:db8::/32"},
		Candidate:     `reject by helo "*.invalid"`,
		Reason:        "listed by bl.test",
		Tags:          []rules.Header{{Name: "X-DNSBL", Value: "bl.test"}},
		DNSLists:      []rules.DNSRecord{{Kind: rules.DNSBL, Site: "bl.test", Answers: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, TXT: "listed", Action: "tag"}},
		DNSListErrors: []string{"bl2.test: timeout"},
	}
	r := want
	s.Message(&r)
	waitWritten(t, s, 1)

	check := func(q interface {
		Query(context.Context, sessionstore.Filter) (sessionstore.Page, error)
		Get(context.Context, int64) (sessionstore.Entry, error)
	}) {
		t.Helper()
		p, err := q.Query(context.Background(), sessionstore.Filter{})
		is.NoErr(err)
		is.Equal(len(p.Entries), 1)
		is.True(!p.More)
		got := p.Entries[0]
		is.Equal(got.Record, want)
		e, err := q.Get(context.Background(), got.ID)
		is.NoErr(err)
		is.Equal(e, got)
		_, err = q.Get(context.Background(), got.ID+1)
		is.True(errors.Is(err, sessionstore.ErrNotFound))
	}
	check(s)

	db := rawDB(t, path)
	var mode string
	is.NoErr(db.QueryRow(`PRAGMA journal_mode`).Scan(&mode))
	is.Equal(mode, "wal")
	rows, err := db.Query(`SELECT name FROM pragma_table_info('sessions') ORDER BY cid`)
	is.NoErr(err)
	var cols []string
	for rows.Next() {
		var c string
		is.NoErr(rows.Scan(&c))
		cols = append(cols, c)
	}
	is.NoErr(rows.Err())
	is.Equal(cols, []string{"id", "time", "client_ip", "client_ip_text", "sender", "action", "control", "stage", "code", "record"})
	var sender, action string
	is.NoErr(db.QueryRow(`SELECT sender, action FROM sessions`).Scan(&sender, &action))
	is.Equal(sender, "alice@example.com") // lowercased for the filters; the record keeps the case
	is.Equal(action, "tag")
	is.Equal(count(t, db, `SELECT count(*) FROM recipients WHERE refused = 0`), 2)
	is.Equal(count(t, db, `SELECT count(*) FROM recipients WHERE refused = 1 AND recipient = 'nobody@domino.test'`), 1)

	is.NoErr(s.Close())
	rd, err := sessionstore.OpenReader(path)
	is.NoErr(err)
	defer rd.Close()
	check(rd)
}

// TestQueueFull: with the writer held back (another connection holds the
// database's write lock, as a program reading it with a write
// transaction open would), Message does not wait: what the queue cannot
// take is dropped and counted, with one warning; once the lock is
// released the queued records are written. Queries run meanwhile.
func TestQueueFull(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "sessions.db")
	h := newLogged()
	const queue, batch = 4, 1
	s := openStore(t, sessionstore.Options{Path: path, Logger: slog.New(h), QueueSize: queue, BatchSize: batch, FlushEvery: time.Millisecond})
	s.Message(record("first", base))
	waitWritten(t, s, 1)

	lock := rawDB(t, path)
	tx, err := lock.Begin() // BEGIN IMMEDIATE: the write lock
	is.NoErr(err)
	_, err = tx.Exec(`INSERT INTO sessions (time, client_ip_text, action, control, stage, code, record) VALUES (0, '', 'accept', '', 'data', 0, '{}')`)
	is.NoErr(err)

	const flood = 100
	for i := range flood {
		s.Message(record(fmt.Sprintf("r%d", i), base.Add(time.Duration(i)*time.Second)))
	}
	st := s.Stats()
	// The queue takes 4, the writer (waiting for the lock) 1 batch.
	is.True(st.Dropped >= flood-queue-batch) // dropped
	is.Equal(st.Written, uint64(1))
	is.Equal(h.count(slog.LevelWarn), 1) // one warning for the lot

	p, err := s.Query(context.Background(), sessionstore.Filter{})
	is.NoErr(err) // reads do not wait for the writer
	is.Equal(len(p.Entries), 1)

	is.NoErr(tx.Rollback())
	testutil.WaitFor(t, "the queued records written", func() bool {
		st := s.Stats()
		return st.Written+st.Dropped == flood+1 && st.Pending == 0
	})
	st = s.Stats()
	is.Equal(st.Failed, uint64(0))
	is.Equal(len(all(t, s)), int(st.Written))
}

// TestRetention: every PruneEvery the records older than the retention
// are deleted, with their recipients, in chunks, while the newer ones
// stay; as the clock moves on, they go too.
func TestRetention(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "sessions.db")
	clock := testutil.NewClock(base)
	s := openStore(t, sessionstore.Options{Path: path, Now: clock.Now, Retention: 24 * time.Hour, PruneEvery: 5 * time.Millisecond})
	const old, recent = 4500, 5 // old: more than two chunks
	for i := range old {
		s.Message(record(fmt.Sprintf("old%d", i), base.Add(-48*time.Hour+time.Duration(i)*time.Second)))
	}
	for i := range recent {
		s.Message(record(fmt.Sprintf("new%d", i), base.Add(-time.Duration(i)*time.Minute)))
	}
	waitWritten(t, s, old+recent)
	testutil.WaitFor(t, "the old records pruned", func() bool { return s.Stats().Pruned == old })
	is.Equal(all(t, s), []string{"new4", "new3", "new2", "new1", "new0"})
	db := rawDB(t, path)
	is.Equal(count(t, db, `SELECT count(*) FROM recipients`), recent)

	clock.Advance(25 * time.Hour)
	testutil.WaitFor(t, "the rest pruned", func() bool { return s.Stats().Pruned == old+recent })
	is.Equal(len(all(t, s)), 0)
	is.Equal(count(t, db, `SELECT count(*) FROM recipients`), 0)
}

// TestClose: Close writes what is queued (the batch not yet due); after
// it Message does nothing and does not panic, and a second Close is
// harmless.
func TestClose(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := sessionstore.Open(sessionstore.Options{Path: path, Logger: testutil.Logger(t), Now: testutil.NewClock(base).Now, FlushEvery: time.Hour})
	is.NoErr(err)
	for i := range 10 {
		s.Message(record(fmt.Sprint(i), base))
	}
	is.True(s.MessagesWanted())
	is.NoErr(s.Close())
	is.Equal(s.Stats().Written, uint64(10))
	is.True(!s.MessagesWanted())
	s.Message(record("late", base))
	s.Verdict(nil, rules.Verdict{})
	is.Equal(s.Stats(), sessionstore.Stats{Written: 10})
	is.NoErr(s.Close())
	_, err = os.Stat(path + "-wal") // the last close checkpoints
	is.True(errors.Is(err, fs.ErrNotExist))

	rd, err := sessionstore.OpenReader(path)
	is.NoErr(err)
	defer rd.Close()
	is.Equal(len(all(t, rd)), 10)
}

// TestOddPath: a path with characters that a file: URI gives a meaning
// to (?, #, %, a space) names that very file, for the store and the
// reader; a relative path is the file in the working directory.
func TestOddPath(t *testing.T) {
	is := is.New(t)
	dir := filepath.Join(t.TempDir(), "a dir #1")
	is.NoErr(os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "sessions?mode=memory%20.db")
	s := openStore(t, sessionstore.Options{Path: path})
	s.Message(record("odd", base))
	waitWritten(t, s, 1)
	is.NoErr(s.Close())
	entries, err := os.ReadDir(dir)
	is.NoErr(err)
	is.Equal(len(entries), 1)
	is.Equal(entries[0].Name(), "sessions?mode=memory%20.db")
	rd, err := sessionstore.OpenReader(path)
	is.NoErr(err)
	defer rd.Close()
	is.Equal(all(t, rd), []string{"odd"})

	t.Chdir(dir)
	rel, err := sessionstore.OpenReader("sessions?mode=memory%20.db")
	is.NoErr(err)
	defer rel.Close()
	is.Equal(all(t, rel), []string{"odd"})
}

// TestDamaged: a file that is not a database, or a database cut short,
// is moved aside, whole, with a warning, and a new store takes its
// place; an empty file is a new database; a database of another
// program is refused and left alone.
func TestDamaged(t *testing.T) {
	truncated := func(t *testing.T, path string) {
		s, err := sessionstore.Open(sessionstore.Options{Path: path, Logger: testutil.Logger(t), Now: testutil.NewClock(base).Now})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2000 {
			r := record(fmt.Sprint(i), base)
			r.Reason = strings.Repeat("x", 200)
			s.Message(r)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("database of %d bytes cut to half", fi.Size())
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		make    func(t *testing.T, path string)
		aside   bool
		openErr string
	}{
		{name: "garbage", aside: true, make: func(t *testing.T, path string) {
			writeFile(t, path, strings.Repeat("this is not a database\n", 500))
		}},
		{name: "garbage with a wal", aside: true, make: func(t *testing.T, path string) {
			writeFile(t, path, strings.Repeat("\x00\xff", 3000))
			writeFile(t, path+"-wal", "stale")
		}},
		{name: "half-written", aside: true, make: truncated},
		{name: "empty", make: func(t *testing.T, path string) { writeFile(t, path, "") }},
		{name: "another program's", openErr: "not a session store", make: func(t *testing.T, path string) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`CREATE TABLE accounts (name TEXT)`); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "sessions.db")
			tc.make(t, path)
			before, err := os.ReadFile(path)
			is.NoErr(err)
			h := newLogged()
			s, err := sessionstore.Open(sessionstore.Options{Path: path, Logger: slog.New(h), Now: testutil.NewClock(base).Now})
			if tc.openErr != "" {
				is.True(err != nil)
				is.True(strings.Contains(err.Error(), path))       // names the file
				is.True(strings.Contains(err.Error(), tc.openErr)) // says why
				after, rerr := os.ReadFile(path)
				is.NoErr(rerr)
				is.True(bytes.Equal(after, before)) // left alone
				return
			}
			is.NoErr(err)
			defer s.Close()
			aside := path + ".damaged-20260301T120000"
			moved, err := os.ReadFile(aside)
			if tc.aside {
				is.NoErr(err)
				is.True(bytes.Equal(moved, before)) // whole
				is.Equal(h.count(slog.LevelWarn), 1)
				if _, err := os.Stat(path + "-wal"); err == nil {
					wal, _ := os.ReadFile(path + "-wal")
					is.True(string(wal) != "stale") // the stale -wal went with it
				}
			} else {
				is.True(errors.Is(err, fs.ErrNotExist))
				is.Equal(h.count(slog.LevelWarn), 0)
			}
			s.Message(record("fresh", base))
			waitWritten(t, s, 1)
			is.Equal(all(t, s), []string{"fresh"})
		})
	}
}

// TestDamagedTwice: a second damaged file in the same second does not
// overwrite the first one moved aside.
func TestDamagedTwice(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "sessions.db")
	now := testutil.NewClock(base).Now
	for _, text := range []string{"first garbage", "second garbage"} {
		writeFile(t, path, strings.Repeat(text, 100))
		s, err := sessionstore.Open(sessionstore.Options{Path: path, Logger: testutil.Logger(t), Now: now})
		is.NoErr(err)
		is.NoErr(s.Close())
		is.NoErr(os.Remove(path))
	}
	first, err := os.ReadFile(path + ".damaged-20260301T120000")
	is.NoErr(err)
	is.True(strings.HasPrefix(string(first), "first garbage"))
	second, err := os.ReadFile(path + ".damaged-20260301T120000-2")
	is.NoErr(err)
	is.True(strings.HasPrefix(string(second), "second garbage"))
}

// TestOpenErrors: a directory that does not exist or is not one is an
// error naming the path; OpenReader never creates the file.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, "x")
	garbage := filepath.Join(dir, "garbage.db")
	writeFile(t, garbage, strings.Repeat("not a database ", 100))
	tests := []struct {
		name   string
		open   func() error
		path   string
		want   string
		absent bool // the path must not have been created
	}{
		{name: "no directory", path: filepath.Join(dir, "missing", "sessions.db"), want: "no such file or directory", absent: true},
		{name: "not a directory", path: filepath.Join(file, "sessions.db"), want: "not a directory", absent: true},
		{name: "reader: no file", path: filepath.Join(dir, "sessions.db"), want: "file does not exist", absent: true},
		{name: "reader: not a database", path: garbage, want: "not a database"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			var err error
			if strings.HasPrefix(tc.name, "reader") {
				var r *sessionstore.Reader
				r, err = sessionstore.OpenReader(tc.path)
				is.True(r == nil)
			} else {
				var s *sessionstore.Store
				s, err = sessionstore.Open(sessionstore.Options{Path: tc.path, Logger: testutil.Logger(t)})
				is.True(s == nil)
			}
			is.True(err != nil)
			t.Log(err)
			is.True(strings.Contains(err.Error(), tc.path)) // names the path
			is.True(strings.Contains(err.Error(), tc.want))
			if tc.absent {
				_, err := os.Lstat(tc.path)
				is.True(err != nil) // not created
			}
		})
	}
}

// TestDiskFull runs the store on a real file system that fills up (a
// small tmpfs): writes fail, are counted and logged once, the writer
// goes on, and once there is room again the next records are written
// and found.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs to fill needs root; CI runs this test as root")
	}
	is := is.New(t)
	dir := t.TempDir()
	testutil.MountTmpfs(t, dir, "size=1m")
	path := filepath.Join(dir, "sessions.db")
	h := newLogged()
	s := openStore(t, sessionstore.Options{Path: path, Logger: slog.New(h), FlushEvery: time.Millisecond, BatchSize: 10})
	s.Message(record("before", base))
	waitWritten(t, s, 1)

	filler := filepath.Join(dir, "filler")
	t.Logf("filled the tmpfs with %d bytes", testutil.FillDisk(t, filler))
	sent := 0
	testutil.WaitFor(t, "a write to fail", func() bool {
		r := record(fmt.Sprintf("full%d", sent), base)
		r.Reason = strings.Repeat("r", 4000) // a page or more each
		s.Message(r)
		sent++
		return s.Stats().Failed > 0
	})
	testutil.WaitFor(t, "the writer idle", func() bool { return s.Stats().Pending == 0 })
	is.Equal(h.count(slog.LevelError), 1) // one line, rate-limited
	t.Logf("%d records sent on the full disk: %+v", sent, s.Stats())

	is.NoErr(os.Remove(filler))
	written := s.Stats().Written
	s.Message(record("after", base))
	waitWritten(t, s, written+1)
	is.Equal(h.count(slog.LevelInfo), 1) // writes succeed again
	p, err := s.Query(context.Background(), sessionstore.Filter{Limit: 1})
	is.NoErr(err)
	is.Equal(p.Entries[0].Record.Session, "after")
	ids := all(t, s)
	is.True(slices.Contains(ids, "before"))
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
