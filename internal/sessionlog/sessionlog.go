// Package sessionlog writes the session log ([log] sessions): one JSON
// document a line for every message and every refused session, as the
// engine records them. encoding/json escapes every control character, so
// no value a client sent can break a line.
package sessionlog

import (
	"encoding/json"
	"log/slog"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// Observer writes message records to a log file.
type Observer struct {
	out *logfile.File
	log *slog.Logger
}

var _ rules.Observer = (*Observer)(nil)

// New returns an observer writing to out; a record that cannot be
// encoded is reported to log. Write failures are not: out queues, counts
// and reports them itself, rate-limited (see logfile.File).
func New(out *logfile.File, log *slog.Logger) *Observer {
	return &Observer{out: out, log: log}
}

// Verdict implements rules.Observer; the session log keeps messages only.
func (o *Observer) Verdict(*rules.Session, rules.Verdict) {}

// MessagesWanted reports whether the session log is on.
func (o *Observer) MessagesWanted() bool { return o.out.Enabled() }

// Message writes one record, one line. logfile.File.Write never fails:
// a line it cannot write now is queued or dropped and counted there.
func (o *Observer) Message(r *rules.MessageRecord) {
	if !o.out.Enabled() {
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		o.log.Error("session log: encode record", slog.Any("error", err))
		return
	}
	o.out.Write(append(b, '\n'))
}
