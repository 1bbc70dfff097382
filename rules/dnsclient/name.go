package dnsclient

import (
	"net/netip"
	"strconv"
	"strings"
)

// normalizeZone returns zone lower-cased without its trailing dot. It
// allocates only when zone needs changing: the engine passes zones already
// normalized.
func normalizeZone(zone string) string {
	zone = strings.TrimSuffix(zone, ".")
	for i := 0; i < len(zone); i++ {
		if c := zone[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(zone)
		}
	}
	return zone
}

// normalizeAddr unmaps an IPv4-mapped IPv6 address and drops an IPv6 zone,
// so that ::ffff:192.0.2.1 is looked up, and cached, as 192.0.2.1.
func normalizeAddr(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}

const hexDigits = "0123456789abcdef"

// queryName returns the fully qualified name to look up for ip in zone
// (both normalized). RFC 5782 §2.1: an IPv4 address's four octets are
// reversed, 192.0.2.99 in zen.example is 99.2.0.192.zen.example. RFC 5782
// §2.4: an IPv6 address is written as 32 nibbles, reversed, as in
// ip6.arpa.
func queryName(zone string, ip netip.Addr) string {
	var b strings.Builder
	if ip.Is4() {
		b.Grow(16 + len(zone) + 1)
		a := ip.As4()
		var num [3]byte
		for i := 3; i >= 0; i-- {
			b.Write(strconv.AppendUint(num[:0], uint64(a[i]), 10))
			b.WriteByte('.')
		}
	} else {
		b.Grow(64 + len(zone) + 1)
		a := ip.As16()
		for i := 15; i >= 0; i-- {
			b.WriteByte(hexDigits[a[i]&0x0f])
			b.WriteByte('.')
			b.WriteByte(hexDigits[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	b.WriteByte('.')
	return b.String()
}
