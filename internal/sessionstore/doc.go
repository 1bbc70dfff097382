// Package sessionstore keeps the session records ([log] store) in an
// SQLite database that the log command and the web console search: one
// row a message or refused session, with its recipients, for as long as
// [log] retention says.
//
// The request path never waits on the database. A Store is a
// rules.Observer whose Message only hands the record to a bounded queue,
// dropping (and counting) it when the queue is full; one writer goroutine
// takes the records from the queue and inserts them in batches, one
// transaction a batch, and deletes what is older than the retention in
// small chunks between the batches. A write that fails (a full disk, a
// lock held too long by another program) is logged, rate-limited, and
// counted; the writer goes on with the next batch.
//
// The database is in WAL mode, so the queries (Query, Get), which use
// connections of their own, run while the writer writes; OpenReader opens
// it read-only for another process, as the log command does while the
// server runs. No message body is ever stored: the records have none.
//
// A file that is not a database, or a damaged one, is moved aside to
// PATH.damaged-YYYYMMDDTHHMMSS (with its -wal and -shm files) and a new
// store is created in its place, so that a bad file never stops the
// server.
package sessionstore
