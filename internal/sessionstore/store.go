package sessionstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// WriterShare is the share of one core the writer takes at most: a
// fifth. Its rest between batches bounds what it can store (about 5,500
// records a second on the 2-core machine of BENCHMARKS.md, 32,000 without
// the rest); a relay that sends more for long drops the rest, counted.
const WriterShare = 0.2

// The defaults of Options.
const (
	DefaultRetention  = 30 * 24 * time.Hour
	DefaultQueueSize  = 65536
	DefaultBatchSize  = 1000
	DefaultFlushEvery = 200 * time.Millisecond
	DefaultPruneEvery = time.Minute
)

const (
	// schemaVersion is the database's PRAGMA user_version.
	schemaVersion = 1
	// pruneChunk is how many sessions one retention transaction deletes
	// at most, so that it holds the write lock only briefly.
	pruneChunk = 2000
	// busyTimeout is how long, in milliseconds, a connection waits for a
	// lock that another one holds (a checkpoint, another program).
	busyTimeout = 5000
	// warnEvery is how often, at most, a dropped record or a failing
	// write is logged.
	warnEvery = time.Minute
)

// schema creates the tables of schemaVersion. The time is in unix
// nanoseconds; client_ip is the 16-byte form of the address (IPv4
// mapped), so that a network is a range of it, and NULL when the record
// has none; sender is the lowercased MAIL FROM, "" for the null sender and
// NULL when there was no MAIL FROM; action is the verdict (accept, tag,
// reject, tempfail). recipients holds the accepted and the refused
// recipients, lowercased.
var schema = []string{
	`CREATE TABLE sessions (
		id INTEGER PRIMARY KEY,
		time INTEGER NOT NULL,
		client_ip BLOB,
		client_ip_text TEXT NOT NULL,
		sender TEXT,
		action TEXT NOT NULL,
		control TEXT NOT NULL,
		stage TEXT NOT NULL,
		code INTEGER NOT NULL,
		record TEXT NOT NULL
	)`,
	`CREATE INDEX sessions_time ON sessions(time)`,
	`CREATE INDEX sessions_client_ip ON sessions(client_ip)`,
	`CREATE INDEX sessions_sender ON sessions(sender)`,
	`CREATE INDEX sessions_action ON sessions(action)`,
	`CREATE INDEX sessions_control ON sessions(control)`,
	`CREATE TABLE recipients (
		session INTEGER NOT NULL,
		recipient TEXT NOT NULL,
		refused INTEGER NOT NULL,
		PRIMARY KEY (session, recipient, refused)
	) WITHOUT ROWID`,
	`CREATE INDEX recipients_recipient ON recipients(recipient)`,
	fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion),
}

// The writer's statements.
const (
	insertSessionRows   = `INSERT INTO sessions (id, time, client_ip, client_ip_text, sender, action, control, stage, code, record) VALUES `
	insertRecipientRows = `INSERT OR IGNORE INTO recipients (session, recipient, refused) VALUES `
	// The oldest sessions before a time, oldest first: the same rows for
	// both deletes of one transaction.
	oldest          = `SELECT id FROM sessions WHERE time < ?1 ORDER BY time, id LIMIT ?2`
	pruneRecipients = `DELETE FROM recipients WHERE session IN (` + oldest + `)`
	pruneSessions   = `DELETE FROM sessions WHERE id IN (` + oldest + `)`
)

// Options configure a Store.
type Options struct {
	// Path is the database file; it is created when missing, in a
	// directory that must exist.
	Path string
	// Retention is how long a record is kept (default 30 days).
	Retention time.Duration
	// Logger receives the store's warnings (default: slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now): the retention's, the
	// warnings' rate limit's and the damaged file's name's.
	Now func() time.Time
	// QueueSize is how many records may wait for the writer (default
	// 65536); past it Message drops them.
	QueueSize int
	// BatchSize is how many records one transaction writes at most
	// (default 1000).
	BatchSize int
	// FlushEvery is how long a record waits, at most, for its batch to
	// fill (default 200ms).
	FlushEvery time.Duration
	// PruneEvery is how often the records older than Retention are
	// deleted (default one minute).
	PruneEvery time.Duration
}

func (o *Options) setDefaults() {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = DefaultPruneEvery
	}
}

// Stats are a Store's counters, for the metrics.
type Stats struct {
	// Written is how many records were stored.
	Written uint64
	// Dropped is how many records Message dropped, the queue being full
	// (or the store closing).
	Dropped uint64
	// Failed is how many records a failed write lost.
	Failed uint64
	// Pruned is how many records the retention deleted.
	Pruned uint64
	// Pending is how many records wait for the writer now.
	Pending int
}

// Store is the session store of a running server: a rules.Observer that
// writes the message records to the database in the background, and
// answers queries while it does.
type Store struct {
	reader
	o   Options
	log *slog.Logger

	queue chan *rules.MessageRecord
	stop  chan struct{}
	done  chan struct{}

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	written, dropped, failed, pruned atomic.Uint64
	inFlight                         atomic.Int64
	lastDropWarn                     atomic.Int64 // unix nanoseconds

	// The writer's, used by its goroutine only (and by Close after it).
	w *sql.DB
	// stmts are the multi-row INSERTs by table and number of rows.
	stmts  map[string]*sql.Stmt
	pruneR *sql.Stmt
	pruneS *sql.Stmt
	warn   failureLog
}

var _ rules.Observer = (*Store)(nil)

// Open opens the store at o.Path, creating the file and its schema when
// needed, and starts its writer. A file that is not a database, or a
// damaged one, is moved aside (see the package documentation) and a new
// store is created. A directory that does not exist or cannot be written
// is an error naming the path.
func Open(o Options) (*Store, error) {
	o.setDefaults()
	if o.Path == "" {
		return nil, errors.New("session store: no path")
	}
	path, err := filepath.Abs(o.Path)
	if err != nil {
		return nil, fmt.Errorf("session store %s: %w", o.Path, err)
	}
	o.Path = path
	s := &Store{o: o, log: o.Logger}
	s.warn.log = o.Logger
	if err := s.openWriter(); err != nil {
		return nil, err
	}
	r, err := openReader(path)
	if err != nil {
		s.closeWriter()
		return nil, err
	}
	s.reader = r
	s.queue = make(chan *rules.MessageRecord, o.QueueSize)
	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	go s.run()
	return s, nil
}

// openWriter opens the writer's connection, moving a damaged file aside
// and starting again once.
func (s *Store) openWriter() error {
	path := s.o.Path
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("session store %s: directory: %w", path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("session store %s: %s is not a directory", path, dir)
	}
	err := s.tryOpenWriter()
	if err == nil || !damaged(err) {
		return err
	}
	aside, merr := moveAside(path, s.o.Now())
	if merr != nil {
		return fmt.Errorf("session store %s is damaged (%v) and cannot be moved aside: %w", path, err, merr)
	}
	s.log.Warn("session store: the database is damaged or not a database; moved aside, starting a new one",
		slog.String("path", path), slog.String("moved_to", aside), slog.Any("error", err))
	return s.tryOpenWriter()
}

// tryOpenWriter opens the database for writing, migrates its schema and
// prepares the writer's statements.
func (s *Store) tryOpenWriter() error {
	path := s.o.Path
	// Created here, not by SQLite, so that it is not world-readable:
	// the records name people. The -wal and -shm files take its mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("session store %s: %w", path, err)
	}
	_ = f.Close()
	// journal_mode=WAL is set by migrate, once the file is known to be
	// a session store or empty: it changes the file's header.
	q := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_txlock=immediate", busyTimeout)
	db, err := sql.Open("sqlite", dsn(path, q))
	if err != nil {
		return fmt.Errorf("session store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := migrate(db); err != nil {
		_ = db.Close()
		return fmt.Errorf("session store %s: %w", path, err)
	}
	s.w = db
	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{{&s.pruneR, pruneRecipients}, {&s.pruneS, pruneSessions}} {
		if *p.st, err = db.Prepare(p.sql); err != nil {
			s.closeWriter()
			return fmt.Errorf("session store %s: prepare: %w", path, err)
		}
	}
	return nil
}

// migrate creates the schema of a new database and checks an existing
// one: it reads the schema and the newest row, so that a file that is
// not a database, or is cut short, fails here.
func migrate(db *sql.DB) error {
	ctx := context.Background()
	var version, objects int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read the schema version: %w", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&objects); err != nil {
		return fmt.Errorf("read the schema: %w", err)
	}
	switch {
	case version == 0 && objects > 0:
		return errors.New("not a session store: a database of something else (no schema version)")
	case version > schemaVersion:
		return fmt.Errorf("schema version %d is newer than this program's (%d): written by a newer smtp-interceptor", version, schemaVersion)
	}
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
		return fmt.Errorf("set WAL mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("set WAL mode: the journal mode is still %q", mode)
	}
	if version == 0 {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("create the schema: %w", err)
		}
		defer func() { _ = tx.Rollback() }()
		for _, stmt := range schema {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("create the schema: %w", err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("create the schema: %w", err)
		}
	}
	var newest sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(id) FROM sessions`).Scan(&newest); err != nil {
		return fmt.Errorf("read the newest session: %w", err)
	}
	return nil
}

// dsn is the driver's name of the database at the absolute path, with
// the query q: a file: URI, so that SQLite's own parameters (mode=ro)
// apply, and any character of the path is escaped.
func dsn(path, q string) string {
	var b strings.Builder
	b.WriteString("file:")
	for _, c := range []byte(path) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("/-_.~", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String() + "?" + q
}

// damaged reports whether err says the file is not a database or is
// corrupt.
func damaged(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code() & 0xff // the primary result code
	return code == sqlite3.SQLITE_NOTADB || code == sqlite3.SQLITE_CORRUPT
}

// moveAside renames a damaged database, and its -wal and -shm files, to
// PATH.damaged-YYYYMMDDTHHMMSS (with -2, -3... when that exists), and
// returns the new name. The -wal file must go with it: left behind, it
// would be replayed into the new database.
func moveAside(path string, now time.Time) (string, error) {
	base := path + ".damaged-" + now.Format("20060102T150405")
	aside := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s-%d", base, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Rename(path+suffix, aside+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return aside, err
		}
	}
	return aside, nil
}

// Verdict implements rules.Observer; the store keeps messages only.
func (s *Store) Verdict(*rules.Session, rules.Verdict) {}

// MessagesWanted implements rules.Observer: true until Close.
func (s *Store) MessagesWanted() bool { return !s.closed.Load() }

// Message implements rules.Observer: it queues r for the writer and
// never blocks. When the queue is full, r is dropped and counted, with a
// warning at most once a minute. After Close it does nothing. The store
// keeps r: the caller must not change it afterwards (the engine
// allocates a record for each call).
func (s *Store) Message(r *rules.MessageRecord) {
	if s.closed.Load() {
		return
	}
	select {
	case s.queue <- r:
		return
	default:
	}
	n := s.dropped.Add(1)
	now := s.o.Now().UnixNano()
	last := s.lastDropWarn.Load()
	if (last == 0 || now-last >= int64(warnEvery)) && s.lastDropWarn.CompareAndSwap(last, now) {
		s.log.Warn("session store: the queue is full, records are dropped",
			slog.String("path", s.o.Path), slog.Int("queue", cap(s.queue)), slog.Uint64("dropped", n))
	}
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Written: s.written.Load(),
		Dropped: s.dropped.Load(),
		Failed:  s.failed.Load(),
		Pruned:  s.pruned.Load(),
		Pending: len(s.queue) + int(s.inFlight.Load()),
	}
}

// Close writes what is queued, stops the writer and closes the database.
// Message does nothing afterwards; a record given while Close runs may
// be lost. Closing twice returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		// Keep the query planner's statistics up to date, as SQLite
		// advises before closing a connection that wrote.
		_, _ = s.w.Exec(`PRAGMA optimize`)
		// The writer's connection closes last: it checkpoints the
		// WAL into the database and removes it.
		rerr := s.reader.close()
		s.closeErr = errors.Join(rerr, s.closeWriter())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("session store %s: close: %w", s.o.Path, s.closeErr)
		}
	})
	return s.closeErr
}

// closeWriter closes the writer's statements and connection.
func (s *Store) closeWriter() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.pruneR, s.pruneS} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	s.stmts = nil
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	return errors.Join(errs...)
}

// run is the writer: it batches the queued records, writes each batch in
// one transaction, and prunes between batches, until Close.
func (s *Store) run() {
	defer close(s.done)
	batch := make([]*rules.MessageRecord, 0, s.o.BatchSize)
	flush := time.NewTimer(s.o.FlushEvery)
	flush.Stop()
	prune := time.NewTicker(s.o.PruneEvery)
	defer prune.Stop()
	rest := time.NewTimer(0)
	<-rest.C
	write := func() {
		flush.Stop()
		if len(batch) == 0 {
			return
		}
		start := time.Now()
		s.write(batch)
		clear(batch)
		batch = batch[:0]
		s.inFlight.Store(0)
		// The writer keeps to its share of one core: after a batch it
		// rests (WriterShare⁻¹ − 1) times as long as the batch took.
		// Under a flood the queue then fills and records are dropped
		// and counted, rather than the mail flow slowed.
		if d := time.Since(start); d > time.Millisecond {
			rest.Reset(time.Duration(float64(d) * (1/WriterShare - 1)))
			select {
			case <-rest.C:
			case <-s.stop: // closed by Close: what is queued is written without rest
				rest.Stop()
			}
		}
	}
	add := func(r *rules.MessageRecord) {
		if len(batch) == 0 {
			flush.Reset(s.o.FlushEvery)
		}
		batch = append(batch, r)
		s.inFlight.Store(int64(len(batch)))
		if len(batch) >= s.o.BatchSize {
			write()
		}
	}
	stopping := func() {
		for {
			select {
			case r := <-s.queue:
				add(r)
			default:
				write()
				return
			}
		}
	}
	pruneDue := true // once at the start
	for {
		if pruneDue {
			// Records and retention take turns: what is queued (a
			// batch at most), then one chunk of old rows, so that a
			// large backlog of old rows never holds the records back.
		ready:
			for range s.o.BatchSize {
				select {
				case r := <-s.queue:
					add(r)
				default:
					break ready
				}
			}
			write()
			select {
			case <-s.stop:
				stopping()
				return
			default:
			}
			pruneDue = s.prune()
			continue
		}
		select {
		case r := <-s.queue:
			add(r)
		case <-flush.C:
			write()
		case <-prune.C:
			pruneDue = true
		case <-s.stop:
			stopping()
			return
		}
	}
}

// row is a record as the sessions table holds it.
type row struct {
	time    int64
	ip      []byte // nil: none
	ipText  string
	sender  sql.NullString
	action  string
	control string
	stage   string
	code    int
	record  []byte
	rcpts   []string
	refused []string
}

func toRow(r *rules.MessageRecord) (row, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return row{}, fmt.Errorf("encode the record of session %s: %w", r.Session, err)
	}
	w := row{
		time:    r.Time.UnixNano(),
		ipText:  r.ClientIP,
		action:  r.Action.String(),
		control: string(r.Control),
		stage:   r.Stage.String(),
		code:    r.Code,
		record:  b,
		rcpts:   r.Recipients,
		refused: r.Refused,
	}
	if a, err := netip.ParseAddr(r.ClientIP); err == nil {
		b16 := a.As16()
		w.ip = b16[:]
	}
	if r.MailFrom != nil {
		w.sender = sql.NullString{String: strings.ToLower(*r.MailFrom), Valid: true}
	}
	return w, nil
}

// write stores a batch in one transaction. A failure is counted and
// logged, rate-limited; the batch is then lost, and the next is tried.
func (s *Store) write(batch []*rules.MessageRecord) {
	ctx := context.Background()
	rows := make([]row, 0, len(batch))
	for _, r := range batch {
		w, err := toRow(r)
		if err != nil {
			s.failed.Add(1)
			s.log.Error("session store: skip a record", slog.Any("error", err))
			continue
		}
		rows = append(rows, w)
	}
	if len(rows) == 0 {
		return
	}
	err := s.insert(ctx, rows)
	if err != nil {
		s.failed.Add(uint64(len(rows)))
		s.warn.failed(s.o.Now(), "write", s.o.Path, err, slog.Int("records_lost", len(rows)))
		return
	}
	s.written.Add(uint64(len(rows)))
	s.warn.succeeded(s.o.Now(), "write", s.o.Path)
}

// insertRows is how many rows one INSERT statement adds at most: one
// statement of many rows costs far less than as many statements.
const insertRows = 100

// insert writes rows in one transaction, with multi-row INSERTs and the
// ids assigned here (the writer is the only one): no id is read back.
func (s *Store) insert(ctx context.Context, rows []row) error {
	// The statements are prepared before the transaction: it holds the
	// writer's only connection.
	total := 0
	for _, w := range rows {
		total += len(w.rcpts) + len(w.refused)
	}
	for _, p := range []struct {
		head      string
		cols, num int
	}{{insertSessionRows, 10, len(rows)}, {insertRecipientRows, 3, total}} {
		for _, n := range []int{min(p.num, insertRows), p.num % insertRows} {
			if n > 0 {
				if _, err := s.multi(ctx, p.head, p.cols, n); err != nil {
					return err
				}
			}
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var next sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT max(id) FROM sessions`).Scan(&next); err != nil {
		return err
	}
	id := next.Int64
	args := make([]any, 0, insertRows*10)
	var rargs []any
	nr := 0
	flushRcpts := func(force bool) error {
		for nr >= insertRows || force && nr > 0 {
			n := min(nr, insertRows)
			st, err := s.multi(ctx, insertRecipientRows, 3, n)
			if err != nil {
				return err
			}
			if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, rargs[:3*n]...); err != nil {
				return err
			}
			rargs = append(rargs[:0], rargs[3*n:]...)
			nr -= n
		}
		return nil
	}
	for start := 0; start < len(rows); start += insertRows {
		chunk := rows[start:min(start+insertRows, len(rows))]
		args = args[:0]
		for _, w := range chunk {
			id++
			args = append(args, id, w.time, w.ip, w.ipText, w.sender, w.action, w.control, w.stage, w.code, w.record)
			for refused, list := range [][]string{w.rcpts, w.refused} {
				for _, a := range list {
					rargs = append(rargs, id, strings.ToLower(a), refused)
					nr++
				}
			}
		}
		st, err := s.multi(ctx, insertSessionRows, 10, len(chunk))
		if err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...); err != nil {
			return err
		}
		if err := flushRcpts(false); err != nil {
			return err
		}
	}
	if err := flushRcpts(true); err != nil {
		return err
	}
	return tx.Commit()
}

// multi returns the prepared statement that inserts n rows of cols
// values with head, preparing it on first use.
func (s *Store) multi(ctx context.Context, head string, cols, n int) (*sql.Stmt, error) {
	key := fmt.Sprintf("%s/%d", head[:24], n)
	if st, ok := s.stmts[key]; ok {
		return st, nil
	}
	one := "(" + strings.Repeat("?, ", cols-1) + "?)"
	q := head + strings.Repeat(one+", ", n-1) + one
	st, err := s.w.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if s.stmts == nil {
		s.stmts = map[string]*sql.Stmt{}
	}
	s.stmts[key] = st
	return st, nil
}

// prune deletes one chunk of the records older than the retention, and
// reports whether there may be more.
func (s *Store) prune() bool {
	ctx := context.Background()
	cutoff := s.o.Now().Add(-s.o.Retention).UnixNano()
	n, err := func() (int64, error) {
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.StmtContext(ctx, s.pruneR).ExecContext(ctx, cutoff, pruneChunk); err != nil {
			return 0, err
		}
		res, err := tx.StmtContext(ctx, s.pruneS).ExecContext(ctx, cutoff, pruneChunk)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		return n, tx.Commit()
	}()
	if err != nil {
		s.warn.failed(s.o.Now(), "prune", s.o.Path, err)
		return false
	}
	s.pruned.Add(uint64(n))
	return n == pruneChunk
}

// failureLog reports failing writes: the first failure at once, then at
// most once every warnEvery, and the recovery. The writer's goroutine
// alone uses it.
type failureLog struct {
	log     *slog.Logger
	failing bool
	last    time.Time
	since   int // failures since the last line
}

func (f *failureLog) failed(now time.Time, op, path string, err error, attrs ...slog.Attr) {
	f.since++
	if f.failing && now.Sub(f.last) < warnEvery {
		return
	}
	attrs = append([]slog.Attr{slog.String("path", path), slog.Any("error", err), slog.Int("failures", f.since)}, attrs...)
	f.log.LogAttrs(context.Background(), slog.LevelError, "session store: "+op+" failed; the writer goes on", attrs...)
	f.failing, f.last, f.since = true, now, 0
}

func (f *failureLog) succeeded(now time.Time, op, path string) {
	if !f.failing {
		return
	}
	f.log.Info("session store: "+op+" succeeds again", slog.String("path", path), slog.Int("failures", f.since))
	f.failing, f.since = false, 0
}
