package dnsclient

import (
	"errors"
	"strconv"

	"github.com/miekg/dns"
)

// RcodeError is the error of a query the resolver answered with a response
// code other than NOERROR and NXDOMAIN (SERVFAIL, REFUSED, ...). Detect it
// with errors.As.
type RcodeError struct {
	// Rcode is the DNS response code, e.g. dns.RcodeServerFailure.
	Rcode int
}

// Error names the response code, e.g. "resolver answered SERVFAIL".
func (e *RcodeError) Error() string {
	name, ok := dns.RcodeToString[e.Rcode]
	if !ok {
		name = "rcode " + strconv.Itoa(e.Rcode)
	}
	return "resolver answered " + name
}

// ErrResolverDown is the error (wrapped) of a query not sent because the
// resolver is marked down: ResolverDownAfter consecutive queries timed out
// and the hold (ResolverDownHold) has not ended. Detect it with errors.Is.
// The engine counts it like any DNS error: a DNS list does not list the
// client, and verify_host_name and verify_domain answer 450.
var ErrResolverDown = errors.New("dns resolver down: recent queries timed out")

// errClosed is the error of a probe asked of a closed client.
var errClosed = errors.New("dns client closed")
