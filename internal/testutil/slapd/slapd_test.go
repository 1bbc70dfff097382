package slapd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/matryer/is"
)

// dial connects to url, binding as dn (anonymous if "").
func dial(t *testing.T, url, dn, pw string) (*ldap.Conn, error) {
	t.Helper()
	l, err := ldap.DialURL(url, ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		return nil, err
	}
	l.SetTimeout(5 * time.Second)
	if dn != "" {
		if err := l.Bind(dn, pw); err != nil {
			l.Close()
			return nil, err
		}
	}
	t.Cleanup(func() { l.Close() })
	return l, nil
}

// find returns the DNs that match filter under o=acme, and the values of
// attr of the first.
func find(t *testing.T, l *ldap.Conn, filter, attr string) ([]string, []string) {
	t.Helper()
	res, err := l.Search(ldap.NewSearchRequest("o=acme", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 5, false, filter, []string{attr}, nil))
	if err != nil {
		t.Fatalf("search %s: %v", filter, err)
	}
	var dns []string
	for _, e := range res.Entries {
		dns = append(dns, e.DN)
	}
	var vals []string
	if len(res.Entries) > 0 {
		vals = res.Entries[0].GetAttributeValues(attr)
	}
	return dns, vals
}

func TestFixture(t *testing.T) {
	is := is.New(t)
	s := Start(t, Options{})
	is.True(strings.HasPrefix(s.URL(), "ldap://127.0.0.1:"))
	is.Equal(s.URL(), "ldap://"+s.Addr()+"/")
	is.Equal(s.LDAPSURL(), "")

	anon, err := dial(t, s.URL(), "", "")
	is.NoErr(err)
	relay, err := dial(t, s.URL(), BindDN, BindPassword)
	is.NoErr(err)

	tests := []struct {
		filter string
		dns    []string
	}{
		{"(mail=alice@acme.example)", []string{"cn=Alice Anders,ou=Sales,o=acme"}},
		{"(cn=a.anders@acme.example)", []string{"cn=Alice Anders,ou=Sales,o=acme"}},
		{"(mail=ALICE@acme.EXAMPLE)", []string{"cn=Alice Anders,ou=Sales,o=acme"}},
		{"(mail=bob@acme.example)", []string{"cn=Bob Berger,ou=Sales,o=acme"}},
		{"(mail=o'neil@acme.example)", []string{"cn=Owen O'Neil,ou=Sales,o=acme"}},
		{"(mail=dup@acme.example)", []string{"cn=Dana Dupont,ou=Sales,o=acme", "cn=Dirk Dupont,o=acme"}},
		{"(&(objectClass=dominoGroup)(mail=sales@acme.example))", []string{"cn=Sales,o=acme"}},
		{"(&(objectClass=groupOfNames)(mail=team@acme.example))", []string{"cn=Team,o=acme"}},
		{"(mail=nobody@acme.example)", nil},
	}
	for _, tt := range tests {
		for _, l := range []*ldap.Conn{anon, relay} {
			dns, _ := find(t, l, tt.filter, "cn")
			is.Equal(dns, tt.dns) // tt.filter
		}
	}

	// Nobody reads passwords, the relay's own excepted.
	_, pw := find(t, anon, "(cn=relay)", "userPassword")
	is.Equal(len(pw), 0)
	_, pw = find(t, relay, "(cn=relay)", "userPassword")
	is.Equal(pw, []string{BindPassword})

	_, err = dial(t, s.URL(), BindDN, "wrong")
	is.True(ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials)) // wrong password
}

func TestStopRestart(t *testing.T) {
	is := is.New(t)
	s := Start(t, Options{})
	addr := s.Addr()
	s.Stop()
	is.True(!s.Process().Running())
	_, err := net.DialTimeout("tcp", addr, time.Second)
	is.True(err != nil) // refused once stopped
	s.Stop()            // stopping twice does nothing

	s.Restart()
	is.Equal(s.Addr(), addr)
	is.True(s.Process().Running())
	l, err := dial(t, s.URL(), BindDN, BindPassword)
	is.NoErr(err)
	dns, _ := find(t, l, "(mail=alice@acme.example)", "cn")
	is.Equal(len(dns), 1) // same data after the restart

	s.Restart() // restarting a running server
	_, err = dial(t, s.URL(), "", "")
	is.NoErr(err)
}

// TestBulk loads a generated LDIF (slapd-lab gen) after the fixture, as
// the e2e lab does, and an empty database.
func TestBulk(t *testing.T) {
	is := is.New(t)
	td, err := TestdataDir()
	is.NoErr(err)
	lab := filepath.Join(td, "..", "..", "contrib", "e2e", "ldap", "slapd-lab")
	out, err := exec.Command(lab, "gen", "2000").Output()
	is.NoErr(err)
	bulk := filepath.Join(t.TempDir(), "bulk.ldif")
	is.NoErr(os.WriteFile(bulk, out, 0o600))

	s := Start(t, Options{LDIF: []string{"domino.ldif", bulk}})
	l, err := dial(t, s.URL(), "", "")
	is.NoErr(err)
	dns, _ := find(t, l, "(mail=user2000@acme.example)", "cn")
	is.Equal(dns, []string{"cn=User 2000,ou=Bulk,o=acme"})
	dns, _ = find(t, l, "(mail=alice@acme.example)", "cn")
	is.Equal(len(dns), 1)

	empty := Start(t, Options{LDIF: []string{}})
	l, err = dial(t, empty.URL(), "", "")
	is.NoErr(err)
	_, err = l.Search(ldap.NewSearchRequest("o=acme", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 5, false, "(objectClass=*)", nil, nil))
	is.True(ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject)) // nothing loaded
}

func TestLaunchErrors(t *testing.T) {
	is := is.New(t)
	bad := filepath.Join(t.TempDir(), "bad.ldif")
	is.NoErr(os.WriteFile(bad, []byte("dn: cn=x,o=elsewhere\nobjectClass: person\ncn: x\nsn: x\n"), 0o600))
	_, err := Launch(t.TempDir(), 0, Options{LDIF: []string{bad}})
	is.True(err != nil && strings.Contains(err.Error(), "slapadd")) // entry outside the suffix
	_, err = Launch(t.TempDir(), 0, Options{LDIF: []string{"missing.ldif"}})
	is.True(errors.Is(err, os.ErrNotExist))
}

func TestTLS(t *testing.T) {
	is := is.New(t)
	caFile, files := TestCertificates(t)
	s := Start(t, Options{TLS: files})
	is.True(strings.HasPrefix(s.LDAPSURL(), "ldaps://127.0.0.1:"))
	pem, err := os.ReadFile(caFile)
	is.NoErr(err)
	pool := x509.NewCertPool()
	is.True(pool.AppendCertsFromPEM(pem))
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}

	l, err := dial(t, s.URL(), "", "")
	is.NoErr(err)
	is.NoErr(l.StartTLS(cfg))
	is.NoErr(l.Bind(BindDN, BindPassword))

	ls, err := ldap.DialURL(s.LDAPSURL(), ldap.DialWithTLSConfig(cfg))
	is.NoErr(err)
	defer ls.Close()
	is.NoErr(ls.Bind(BindDN, BindPassword))
}

func TestBlackholeDead(t *testing.T) {
	is := is.New(t)
	url := Blackhole(t)
	c, err := net.DialTimeout("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "ldap://"), "/"), time.Second)
	is.NoErr(err) // accepts
	defer c.Close()
	_, err = c.Write([]byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00})
	is.NoErr(err)
	is.NoErr(c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	is.True(errors.As(err, &ne) && ne.Timeout()) // never answers

	dead := DeadURL(t)
	_, err = net.DialTimeout("tcp", strings.TrimSuffix(strings.TrimPrefix(dead, "ldap://"), "/"), time.Second)
	is.True(err != nil) // refused
}
