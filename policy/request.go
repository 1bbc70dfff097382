package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Limits on one request. SMTPD_POLICY_README sets none, but Postfix's own
// requests are a few hundred bytes: these bound what a hostile or broken
// client can make the server hold.
const (
	MaxLineBytes    = 64 * 1024   // one name=value line, newline included
	MaxRequestBytes = 1024 * 1024 // one whole request
	MaxAttributes   = 1000        // name=value lines in one request
)

// ErrBadRequest wraps every reason a request is refused: the protocol asks
// that such a client get no reply, so the connection is closed.
var ErrBadRequest = errors.New("bad policy request")

// The reasons a request is refused, as BadRequestReason gives them: fixed
// texts without client data, fit for a metric label.
const (
	ReasonLineTooLong       = "line too long"                   // a line over MaxLineBytes
	ReasonRequestTooLong    = "request too long"                // a request over MaxRequestBytes
	ReasonTooManyAttributes = "too many attributes"             // over MaxAttributes
	ReasonNUL               = "NUL byte"                        // a NUL byte in a line
	ReasonNotNameValue      = "line not name=value"             // no '=', or nothing before it
	ReasonNoRequest         = "no request attribute"            // no request= line
	ReasonWrongRequest      = "request not smtpd_access_policy" // request= something else
	ReasonTruncated         = "request cut off"                 // the stream ended inside a request
)

// requestError is a refused request: a fixed reason, and a message with
// the details for the log.
type requestError struct {
	reason string
	msg    string
}

func (e *requestError) Error() string { return ErrBadRequest.Error() + ": " + e.msg }
func (e *requestError) Unwrap() error { return ErrBadRequest }

func badRequest(reason, format string, args ...any) error {
	return &requestError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// BadRequestReason returns the reason of an error of ReadRequest that
// wraps ErrBadRequest (one of the Reason constants), or "" for any other
// error.
func BadRequestReason(err error) string {
	var re *requestError
	if errors.As(err, &re) {
		return re.reason
	}
	return ""
}

// Request holds the attributes of one policy request that the engine uses
// (SMTPD_POLICY_README, "Protocol description"). Others are ignored.
type Request struct {
	Request           string // must be "smtpd_access_policy"
	ProtocolState     string // CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY, ETRN
	ProtocolName      string // SMTP or ESMTP
	HeloName          string
	QueueID           string
	Sender            string
	Recipient         string
	ClientAddress     string
	ClientPort        string // Postfix 2.5+: with the address, names the SMTP session
	ClientName        string // verified name, or "unknown"
	ReverseClientName string
	Instance          string
	SASLUsername      string
	// Attributes counts the name=value lines read.
	Attributes int

	long []byte // gathers a line longer than the reader's buffer
}

// fieldIndex returns the index of an attribute in fields, or -1 for an
// attribute the engine does not use.
func fieldIndex(name []byte) int {
	switch string(name) { // no allocation: the compiler compares in place
	case "request":
		return 0
	case "protocol_state":
		return 1
	case "protocol_name":
		return 2
	case "helo_name":
		return 3
	case "queue_id":
		return 4
	case "sender":
		return 5
	case "recipient":
		return 6
	case "client_address":
		return 7
	case "client_name":
		return 8
	case "reverse_client_name":
		return 9
	case "instance":
		return 10
	case "sasl_username":
		return 11
	case "client_port":
		return 12
	}
	return -1
}

const numFields = 13

// fields returns pointers to the fields, in fieldIndex order.
func (r *Request) fields() [numFields]*string {
	return [numFields]*string{&r.Request, &r.ProtocolState, &r.ProtocolName, &r.HeloName, &r.QueueID,
		&r.Sender, &r.Recipient, &r.ClientAddress, &r.ClientName, &r.ReverseClientName, &r.Instance, &r.SASLUsername, &r.ClientPort}
}

// ReadRequest reads one request from r into req, reusing req's strings when
// a value repeats the previous request's (a persistent connection sends the
// same client attributes again and again), so a steady stream of requests
// allocates nothing. It returns io.EOF when the client closed the
// connection between requests, and an error wrapping ErrBadRequest (see
// BadRequestReason) for anything the protocol does not allow: a line over
// MaxLineBytes, a request over MaxRequestBytes or MaxAttributes, a line
// that is not name=value, a NUL byte, a missing or wrong request
// attribute, or a request cut off by the end of the stream.
//
// r may have a buffer of any size: a line longer than it is gathered in
// req (up to MaxLineBytes), so a small buffer per connection is enough.
// The limits hold whatever the buffer size.
func ReadRequest(r *bufio.Reader, req *Request) error {
	var seen [numFields]bool
	fl := req.fields()
	total, n := 0, 0
	defer req.dropLong()
	for {
		line, err := readLine(r, &req.long)
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				return badRequest(ReasonLineTooLong, "line longer than %d bytes", MaxLineBytes)
			case errors.Is(err, io.EOF) && len(line) == 0 && n == 0:
				return io.EOF
			case errors.Is(err, io.EOF):
				return badRequest(ReasonTruncated, "connection closed in the middle of a request")
			}
			return err
		}
		total += len(line)
		if total > MaxRequestBytes {
			return badRequest(ReasonRequestTooLong, "request longer than %d bytes", MaxRequestBytes)
		}
		// SMTPD_POLICY_README: "The request ends with an empty line."
		line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
		if len(line) == 0 {
			if n == 0 {
				continue // stray empty line between requests
			}
			break
		}
		n++
		if n > MaxAttributes {
			return badRequest(ReasonTooManyAttributes, "more than %d attributes", MaxAttributes)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return badRequest(ReasonNUL, "NUL byte in attribute %d", n)
		}
		eq := bytes.IndexByte(line, '=')
		if eq <= 0 {
			return badRequest(ReasonNotNameValue, "attribute %d is not name=value", n)
		}
		name, value := line[:eq], line[eq+1:]
		i := fieldIndex(name)
		if i < 0 {
			continue // unknown attributes are ignored, as the protocol asks
		}
		seen[i] = true
		if p := fl[i]; *p != string(value) {
			*p = string(value)
		}
	}
	for i, f := range fl {
		if !seen[i] {
			*f = ""
		}
	}
	req.Attributes = n
	if req.Request != "smtpd_access_policy" {
		if req.Request == "" {
			return badRequest(ReasonNoRequest, "no request= attribute")
		}
		return badRequest(ReasonWrongRequest, "request=%q is not smtpd_access_policy", truncate(req.Request, 64))
	}
	return nil
}

// errLineTooLong is readLine's error for a line over MaxLineBytes.
var errLineTooLong = errors.New("line too long")

// keepLongBytes is the largest buffer for long lines kept in a Request
// between two requests; a larger one, made for a hostile line, is let go
// so that an idle connection does not hold it.
const keepLongBytes = 4 << 10

// readLine returns the next line of r, newline included, like
// r.ReadSlice('\n'), and an error that is not nil when the line has no
// newline (io.EOF: the stream ended). A line longer than r's buffer is
// gathered in *long. A line over MaxLineBytes, newline included, is
// errLineTooLong, and so is an unended one of MaxLineBytes or more: it
// could not end within the limit.
func readLine(r *bufio.Reader, long *[]byte) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Longer than r's buffer: gather the pieces.
		buf := (*long)[:0]
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(buf)+len(line) >= MaxLineBytes {
				return nil, errLineTooLong
			}
			buf = append(buf, line...)
			line, err = r.ReadSlice('\n')
		}
		buf = append(buf, line...)
		*long = buf
		line = buf
	}
	if len(line) > MaxLineBytes || err != nil && len(line) >= MaxLineBytes {
		return nil, errLineTooLong
	}
	return line, err
}

// dropLong lets go of a large buffer for long lines.
func (r *Request) dropLong() {
	if cap(r.long) > keepLongBytes {
		r.long = nil
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
