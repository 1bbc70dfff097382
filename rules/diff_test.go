package rules

import (
	"testing"

	"github.com/matryer/is"
)

func TestDiff(t *testing.T) {
	is := is.New(t)
	old, err := Parse("", "[blacklist]\nhosts = [\"192.0.2.1\", \"192.0.2.2\"]\n[helo]\ndeny = [\"bad\"]\n[dns_blacklist]\nsites = [\"bl.test\"]")
	is.NoErr(err)
	cfg, err := Parse("", "[blacklist]\nhosts = [\"192.0.2.2\", \"192.0.2.3\", \"192.0.2.4\"]\n[helo]\ndeny = [\"bad\"]\nreject_empty = true\n[dns_blacklist]\nsites = [\"bl.test\"]\n[server]\nmax_connections_per_ip = 5")
	is.NoErr(err)
	var got []string
	for _, c := range Diff(old, cfg) {
		got = append(got, c.String())
	}
	is.Equal(got, []string{
		"server.max_connections_per_ip: 0 → 5",
		"blacklist.hosts: +2 -1 (2 → 3 entries)",
		"helo.reject_empty: false → true",
	})
	is.Equal(len(Diff(cfg, cfg)), 0)
	for name, want := range map[string]string{"MaxConnectionsPerIP": "max_connections_per_ip", "DNSBlacklist": "dns_blacklist",
		"IdleTimeout": "idle_timeout", "Helo": "helo", "CheckAuthenticated": "check_authenticated"} {
		is.Equal(snake(name), want)
	}
}
