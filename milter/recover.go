package milter

import (
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"

	gomilter "github.com/d--j/go-milter"
)

// errCallbackPanic ends a connection after one of our callbacks
// panicked. It wraps net.ErrClosed, which go-milter takes for a normal
// close: go-milter then closes just that connection and logs nothing, as
// recoverPanic has logged the panic already.
var errCallbackPanic = fmt.Errorf("milter callback panicked: %w", net.ErrClosed)

// recoverPanic, deferred at the top of a callback, turns a panic into an
// error (and no response), so go-milter closes this connection only: its
// session goroutine has no recover of its own, and a panic there would end
// the process. The panic is logged at error level with its stack. resp
// may be nil for callbacks without a response.
func (m *session) recoverPanic(callback string, resp **gomilter.Response, err *error) {
	r := recover()
	if r == nil {
		return
	}
	sessionID := ""
	if m.sess != nil {
		sessionID = m.sess.ID
	}
	m.srv.log.Error("panic in milter callback; closing the connection",
		slog.String("callback", callback), slog.Uint64("milter_id", m.id), slog.String("session", sessionID),
		slog.String("panic", fmt.Sprint(r)), slog.String("stack", string(debug.Stack())))
	if resp != nil {
		*resp = nil
	}
	*err = fmt.Errorf("milter %s: panic %v: %w", callback, r, errCallbackPanic)
}
