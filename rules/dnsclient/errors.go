package dnsclient

import (
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
