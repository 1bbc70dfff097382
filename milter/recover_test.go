package milter

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// panicDNS panics on the query for one client: a bug in a callback.
type panicDNS struct{ ip netip.Addr }

func (d panicDNS) Query(ctx context.Context, zone string, ip netip.Addr) (rules.DNSAnswer, error) {
	if ip == d.ip {
		panic("boom in the DNS list client")
	}
	return rules.DNSAnswer{}, nil
}

// A panic in one of our callbacks ends that connection only: it is
// logged with its stack and the server goes on.
func TestCallbackPanicClosesOnlyItsConnection(t *testing.T) {
	is := is.New(t)
	var mc malformedCounter
	ts := startMilterWith(t, "tcp", "[dns_blacklist]\nenabled = true\nsites = [\"bl.test\"]",
		serverSetup{dns: panicDNS{ip: netip.MustParseAddr("192.0.2.13")}, opts: Options{OnMalformed: mc.add}})
	other := ts.session(t, postfixMacros("192.0.2.1", "unknown")) // open across the panic
	is.Equal(other.connect("192.0.2.1", "unknown"), "")

	m := ts.session(t, postfixMacros("192.0.2.13", "unknown"))
	is.True(strings.HasPrefix(m.connect("192.0.2.13", "unknown"), "error: "))
	errs := ts.logLines("ERROR", "panic in milter callback")
	is.Equal(len(errs), 1)
	is.True(strings.Contains(errs[0], "callback=connect"))
	is.True(strings.Contains(errs[0], "boom in the DNS list client"))
	is.True(strings.Contains(errs[0], "recover.go")) // the stack
	is.Equal(len(mc.get()), 0)                       // not a malformed packet

	is.Equal(other.helo("x.example")+other.mail("a@example.com"), "")
	ts.goodSession(t)
}
