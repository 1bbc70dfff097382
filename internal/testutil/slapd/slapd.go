// Package slapd runs a real OpenLDAP slapd on loopback for the tests and
// benchmarks of the directory package: the stand-in for the LDAP service
// of HCL Domino.
//
// The configuration is testdata/ldap/slapd.conf.in, the template that
// contrib/e2e/ldap/slapd-lab fills in as well: back_mdb, the schemas core,
// cosine, inetorgperson and testdata/ldap/domino.schema, suffix o=acme,
// everyone may read and anonymous may bind. The entries (by default
// testdata/ldap/domino.ldif) are loaded with slapadd -q before slapd
// starts, which loads 100,000 entries in a few seconds.
//
// [Start] ties a server to a test: it is stopped and its files removed
// when the test ends. [Launch] is the same without a test, for programs.
package slapd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// The programs run, as the Debian packages slapd and ldap-utils install
// them.
const (
	SlapdPath   = "/usr/sbin/slapd"
	SlapaddPath = "/usr/sbin/slapadd"
)

// The defaults of Options.
const (
	DefaultSuffix       = "o=acme"
	DefaultRootPassword = "admin-secret"
	// BindDN and BindPassword are the bind user of domino.ldif.
	BindDN       = "cn=relay,o=acme"
	BindPassword = "relay-secret"
)

// ErrNotInstalled is returned when slapd or slapadd is missing.
var ErrNotInstalled = errors.New("slapd not installed: apt-get install slapd ldap-utils")

// Options says what a server serves. Relative file names are taken
// relative to the module's testdata/ldap.
type Options struct {
	// LDIF are the files loaded, in order, with slapadd -q before slapd
	// starts; nil is domino.ldif alone, an empty non-nil slice nothing.
	LDIF []string
	// Schemas are the schema files included after OpenLDAP's core, cosine
	// and inetorgperson; nil is domino.schema.
	Schemas []string
	// Suffix is the database's suffix; "" is o=acme.
	Suffix string
	// RootDN is the database's root DN; "" is cn=admin under Suffix.
	RootDN string
	// RootPassword is RootDN's password; "" is admin-secret.
	RootPassword string
	// TLS, when set, makes slapd offer StartTLS on its ldap:// address and
	// listen on an ldaps:// address too ([Process.LDAPSURL]).
	TLS *TLSFiles
}

// TLSFiles are the PEM files of slapd's certificate and private key.
type TLSFiles struct {
	Cert, Key string
}

// Process is a running slapd started by [Launch].
type Process struct {
	dir     string
	conf    string
	port    int
	tlsPort int
	suffix  string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stderr  *lockedBuffer
}

// Launch writes the configuration into dir (which must exist and should be
// empty), loads the LDIF files and starts slapd in the foreground, as a
// child process, on 127.0.0.1:port (0: a free port), returning once it
// answers an anonymous search. The caller must Stop it.
func Launch(dir string, port int, o Options) (*Process, error) {
	if err := installed(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("slapd: %w", err)
	}
	p := &Process{dir: dir, conf: filepath.Join(dir, "slapd.conf"), suffix: o.Suffix}
	if p.suffix == "" {
		p.suffix = DefaultSuffix
	}
	if err := WriteConfig(dir, o); err != nil {
		return nil, err
	}
	ldifs, err := resolve(o.LDIF, "domino.ldif")
	if err != nil {
		return nil, err
	}
	if err := Load(p.conf, ldifs...); err != nil {
		return nil, err
	}
	// A free port may be taken between our probe and slapd's bind: try a
	// few when the caller let us choose.
	tries := 1
	if port == 0 {
		tries = 3
	}
	for i := 0; ; i++ {
		p.port = port
		if p.port == 0 {
			if p.port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		if o.TLS != nil {
			if p.tlsPort, err = FreePort(); err != nil {
				return nil, err
			}
		}
		err = p.start()
		if err == nil || i+1 >= tries {
			return p, err
		}
	}
}

// WriteConfig writes dir/slapd.conf from testdata/ldap/slapd.conf.in and
// creates dir/data, the database directory.
func WriteConfig(dir string, o Options) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("slapd: %w", err)
	}
	td, err := TestdataDir()
	if err != nil {
		return err
	}
	tmpl, err := os.ReadFile(filepath.Join(td, "slapd.conf.in"))
	if err != nil {
		return fmt.Errorf("slapd: %w", err)
	}
	schemas, err := resolve(o.Schemas, "domino.schema")
	if err != nil {
		return err
	}
	var inc strings.Builder
	for _, s := range schemas {
		fmt.Fprintf(&inc, "include %s\n", s)
	}
	var tls string
	if o.TLS != nil {
		cert, err := filepath.Abs(o.TLS.Cert)
		if err != nil {
			return fmt.Errorf("slapd: %w", err)
		}
		key, err := filepath.Abs(o.TLS.Key)
		if err != nil {
			return fmt.Errorf("slapd: %w", err)
		}
		tls = fmt.Sprintf("TLSCertificateFile %s\nTLSCertificateKeyFile %s\n", cert, key)
	}
	suffix := o.Suffix
	if suffix == "" {
		suffix = DefaultSuffix
	}
	rootDN := o.RootDN
	if rootDN == "" {
		rootDN = "cn=admin," + suffix
	}
	rootPW := o.RootPassword
	if rootPW == "" {
		rootPW = DefaultRootPassword
	}
	conf := strings.NewReplacer(
		"@DIR@", dir,
		"@INCLUDES@", strings.TrimSuffix(inc.String(), "\n"),
		"@TLS@", strings.TrimSuffix(tls, "\n"),
		"@SUFFIX@", suffix,
		"@ROOTDN@", rootDN,
		"@ROOTPW@", rootPW,
	).Replace(string(tmpl))
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return fmt.Errorf("slapd: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "slapd.conf"), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("slapd: %w", err)
	}
	return nil
}

// Load adds the entries of the LDIF files to the database of the
// configuration conf with slapadd -q (slapd must not be running on it).
func Load(conf string, ldifs ...string) error {
	if len(ldifs) == 0 {
		return nil
	}
	if err := installed(); err != nil {
		return err
	}
	var readers []io.Reader
	for _, f := range ldifs {
		fh, err := os.Open(f)
		if err != nil {
			return fmt.Errorf("slapd: %w", err)
		}
		defer fh.Close()
		// A blank line between the files ends the last entry of each.
		readers = append(readers, fh, strings.NewReader("\n\n"))
	}
	var out bytes.Buffer
	cmd := exec.Command(SlapaddPath, "-q", "-f", conf)
	cmd.Stdin = io.MultiReader(readers...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("slapd: slapadd %s: %w: %s", strings.Join(ldifs, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// TestdataDir returns the module's testdata/ldap directory, found from this
// source file or, failing that, from the working directory upwards.
func TestdataDir() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, d := range starts {
		for {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				td := filepath.Join(d, "testdata", "ldap")
				if _, err := os.Stat(filepath.Join(td, "slapd.conf.in")); err == nil {
					return td, nil
				}
			}
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return "", errors.New("slapd: testdata/ldap/slapd.conf.in not found above this package or the working directory")
}

// FreePort returns a TCP port of 127.0.0.1 that nothing listened on a
// moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("slapd: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func installed() error {
	for _, p := range []string{SlapdPath, SlapaddPath} {
		if _, err := os.Stat(p); err != nil {
			return ErrNotInstalled
		}
	}
	return nil
}

// resolve makes the names absolute (relative ones under testdata/ldap);
// nil is def.
func resolve(names []string, def string) ([]string, error) {
	if names == nil {
		names = []string{def}
	}
	var td string
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !filepath.IsAbs(n) {
			if td == "" {
				var err error
				if td, err = TestdataDir(); err != nil {
					return nil, err
				}
			}
			n = filepath.Join(td, n)
		}
		if _, err := os.Stat(n); err != nil {
			return nil, fmt.Errorf("slapd: %w", err)
		}
		out = append(out, n)
	}
	return out, nil
}

// URL returns the server's ldap:// URL.
func (p *Process) URL() string { return "ldap://" + p.Addr() + "/" }

// Addr returns the server's host:port.
func (p *Process) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// LDAPSURL returns the server's ldaps:// URL; "" without Options.TLS.
func (p *Process) LDAPSURL() string {
	if p.tlsPort == 0 {
		return ""
	}
	return "ldaps://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.tlsPort)) + "/"
}

// Dir returns the instance directory: slapd.conf, data/.
func (p *Process) Dir() string { return p.dir }

// Running reports whether slapd runs.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Stderr returns what slapd wrote on its standard error.
func (p *Process) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stderr == nil {
		return ""
	}
	return p.stderr.String()
}

// start runs slapd and waits until it answers.
func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("slapd: already running")
	}
	urls := p.URL()
	if p.tlsPort != 0 {
		urls += " " + p.LDAPSURL()
	}
	// -d 0: stay in the foreground, as our child, and log nothing.
	cmd := exec.Command(SlapdPath, "-d", "0", "-f", p.conf, "-h", urls)
	stderr := &lockedBuffer{}
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("slapd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.cmd, p.exited, p.stderr = cmd, exited, stderr
	if err := p.wait(); err != nil {
		p.stopLocked()
		return err
	}
	return nil
}

// wait polls until slapd answers an anonymous search of the root DSE.
func (p *Process) wait() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = p.answers(); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("slapd: exited on start (%s): %s", p.cmd.ProcessState, strings.TrimSpace(p.stderr.String()))
		case <-ctx.Done():
			return fmt.Errorf("slapd: no answer on %s within 20s: %w; stderr: %s", p.URL(), last, strings.TrimSpace(p.stderr.String()))
		case <-tick.C:
		}
	}
}

// answers connects and searches the root DSE anonymously, once.
func (p *Process) answers() error {
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	l := ldap.NewConn(c, false)
	l.Start()
	l.SetTimeout(2 * time.Second)
	defer l.Close()
	_, err = l.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 2, false, "(objectClass=*)", []string{"namingContexts"}, nil))
	return err
}

// Stop stops slapd (SIGTERM, SIGKILL after 10s) and waits until it is
// gone; the data stay for Restart. Stopping a stopped server does nothing.
func (p *Process) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked()
}

func (p *Process) stopLocked() error {
	if p.cmd == nil {
		return nil
	}
	cmd, exited := p.cmd, p.exited
	p.cmd, p.exited = nil, nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("slapd: pid %d ignored SIGTERM for 10s, killed", cmd.Process.Pid)
}

// Restart stops slapd if it runs and starts it again on the same port with
// the same data.
func (p *Process) Restart() error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.start()
}

// lockedBuffer collects a child's output while a test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the first 64 KiB: enough to say why slapd failed.
	if room := 64<<10 - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
		} else {
			l.b.Write(p)
		}
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
