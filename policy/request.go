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
// allocates little. It returns io.EOF when the client closed the connection
// between requests, and an error wrapping ErrBadRequest for anything the
// protocol does not allow: a line over MaxLineBytes, a request over
// MaxRequestBytes or MaxAttributes, a line that is not name=value, a NUL
// byte, a missing or wrong request attribute, or a request cut off by the
// end of the stream.
//
// r must have been made with a buffer of at least MaxLineBytes.
func ReadRequest(r *bufio.Reader, req *Request) error {
	var seen [numFields]bool
	fl := req.fields()
	total, n := 0, 0
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				return fmt.Errorf("%w: line longer than %d bytes", ErrBadRequest, MaxLineBytes)
			case errors.Is(err, io.EOF) && len(line) == 0 && n == 0:
				return io.EOF
			case errors.Is(err, io.EOF):
				return fmt.Errorf("%w: connection closed in the middle of a request", ErrBadRequest)
			}
			return err
		}
		total += len(line)
		if total > MaxRequestBytes {
			return fmt.Errorf("%w: request longer than %d bytes", ErrBadRequest, MaxRequestBytes)
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
			return fmt.Errorf("%w: more than %d attributes", ErrBadRequest, MaxAttributes)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return fmt.Errorf("%w: NUL byte in attribute %d", ErrBadRequest, n)
		}
		eq := bytes.IndexByte(line, '=')
		if eq <= 0 {
			return fmt.Errorf("%w: attribute %d is not name=value", ErrBadRequest, n)
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
			return fmt.Errorf("%w: no request= attribute", ErrBadRequest)
		}
		return fmt.Errorf("%w: request=%q is not smtpd_access_policy", ErrBadRequest, truncate(req.Request, 64))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
