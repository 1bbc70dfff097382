package listen_test

// A real file descriptor exhaustion: the test binary runs itself as a
// helper process with a low RLIMIT_NOFILE, serving a policy and a milter
// listener through a Guard, and the test fills its descriptor table.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/listen"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/milter"
	"github.com/smtp-interceptor/smtp-interceptor/policy"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// helperEnv makes the test binary the helper process; its value is the
// helper's max_connections ("0": the default, from the descriptor limit).
const helperEnv = "SMTP_INTERCEPTOR_LISTEN_FD_HELPER"

// helperNofile is the helper's soft RLIMIT_NOFILE.
const helperNofile = 64

func TestMain(m *testing.M) {
	if v, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(fdHelper(v))
	}
	os.Exit(m.Run())
}

// fdHelper is the helper process. It lowers its descriptor limit, serves
// a policy and a milter listener (TCP, 127.0.0.1) through one Guard,
// writes on standard output one line per event ("listening POLICY MILTER
// DEFAULT_MAX", "accept-error PROTOCOL ERROR", "refused PROTOCOL REASON",
// "serve-error PROTOCOL ERROR") and stops when standard input closes.
func fdHelper(maxConns string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "helper:", err); return 2 }
	maxConnections, err := strconv.Atoi(maxConns)
	if err != nil {
		return fail(err)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fail(err)
	}
	rl.Cur = helperNofile
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fail(err)
	}
	cfg, err := rules.Parse("", "[blacklist]\nhosts = [\"192.0.2.66\"]\n")
	if err != nil {
		return fail(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	engine := rules.NewEngine(cfg, rules.EngineOptions{Logger: log})
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}
	g := listen.NewGuard(listen.GuardOptions{
		Logger:        log,
		Limits:        func() listen.Limits { return listen.Limits{MaxConnections: maxConnections} },
		OnAcceptError: func(p string, err error) { say("accept-error %s %v", p, err) },
		OnRefused:     func(p string, r listen.Reason) { say("refused %s %s", p, r) },
	})
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	psrv := policy.New(engine, policy.Options{Logger: log})
	msrv := milter.New(engine, milter.Options{Logger: log})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := psrv.Serve(g.Wrap(pln, "policy")); !errors.Is(err, policy.ErrServerClosed) {
			say("serve-error policy %v", err)
		}
	})
	wg.Go(func() {
		if err := msrv.Serve(g.Wrap(mln, "milter")); err != nil && !errors.Is(err, milter.ErrServerClosed) {
			say("serve-error milter %v", err)
		}
	})
	say("listening %s %s %d", pln.Addr(), mln.Addr(), listen.DefaultMaxConnections())
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	psrv.Shutdown(ctx)
	msrv.Shutdown(ctx)
	wg.Wait()
	return 0
}

// helper is a running helper process.
type helper struct {
	cmd                *exec.Cmd
	stdin              io.Closer
	stderr             *testutil.SyncBuffer
	policyAddr, milter string
	defaultMax         int

	mu    sync.Mutex
	lines []string
}

func startHelper(t *testing.T, maxConnections int) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strconv.Itoa(maxConnections))
	h := &helper{cmd: cmd, stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = h.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, sc.Text())
			h.mu.Unlock()
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close() // the helper shuts down
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("helper: %v", err)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Error("the helper did not stop")
		}
		if t.Failed() {
			t.Logf("helper log:\n%s", h.stderr.String())
		}
	})
	testutil.WaitFor(t, "the helper's listeners", func() bool { return len(h.find("listening ")) > 0 })
	f := strings.Fields(h.find("listening ")[0])
	h.policyAddr, h.milter = f[1], f[2]
	h.defaultMax, _ = strconv.Atoi(f[3])
	return h
}

// find returns the helper's output lines that start with prefix.
func (h *helper) find(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, l := range h.lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// policyAsk sends one RCPT request from client ip on a new connection and
// returns the reply's action.
func policyAsk(addr, ip string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second)) // a back-off of up to 1 s first
	fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\n"+
		"client_name=unknown\nhelo_name=mail.example.com\nsender=a@example.com\nrecipient=b@domino.test\n\n", ip)
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(strings.TrimPrefix(line, "action=")), err
}

// milterMail runs a milter session from client ip up to MAIL FROM and
// returns the reply to it ("" to go on, else the SMTP reply).
func milterMail(addr, ip string) (string, error) {
	client := gomilter.NewClient("tcp", addr, gomilter.WithActions(gomilter.AllClientSupportedActionMasks),
		gomilter.WithDialer(&net.Dialer{Timeout: 5 * time.Second}),
		gomilter.WithReadTimeout(15*time.Second), gomilter.WithWriteTimeout(15*time.Second))
	macros := gomilter.NewMacroBag()
	macros.Set("{client_addr}", ip)
	macros.Set("{client_name}", "unknown")
	s, err := client.Session(macros)
	if err != nil {
		return "", err
	}
	defer s.Close()
	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) { return s.Conn("unknown", gomilter.FamilyInet, 25, ip) },
		func() (*gomilter.Action, error) { return s.Helo("mail.example.com") },
		func() (*gomilter.Action, error) { return s.Mail("<a@example.com>", "") },
	}
	for _, step := range steps {
		act, err := step()
		if err != nil {
			return "", err
		}
		if act.Type == gomilter.ActionRejectWithCode {
			return strings.TrimSpace(act.SMTPReply), nil
		}
		if act.Type != gomilter.ActionContinue {
			return act.String(), nil
		}
	}
	return "", nil
}

func TestFDExhaustion(t *testing.T) {
	const refused = "550 5.7.1 Connection denied based on policy reason"
	tests := []struct {
		name           string
		maxConnections int    // the helper's; 0: the default
		flood          string // the listener filled: "policy" or "milter"
		outOfFDs       bool   // the helper runs out of descriptors (else the limit refuses first)
	}{
		{"policy listener out of descriptors", 10_000, "policy", true},
		{"milter listener out of descriptors", 10_000, "milter", true},
		{"the default limit keeps descriptors in reserve", 0, "policy", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			h := startHelper(t, tt.maxConnections)
			is.Equal(h.defaultMax, listen.MaxConnectionsFor(helperNofile)) // three quarters of the limit
			addr := h.policyAddr
			if tt.flood == "milter" {
				addr = h.milter
			}
			// More connections than the helper has descriptors: those it
			// cannot accept wait in the listen backlog.
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range 3 * helperNofile {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				is.NoErr(err)
				conns = append(conns, c)
			}
			if tt.outOfFDs {
				testutil.WaitFor(t, "the helper to run out of descriptors", func() bool {
					for _, l := range h.find("accept-error " + tt.flood + " ") {
						if strings.Contains(l, "too many open files") {
							return true
						}
					}
					return len(h.find("serve-error")) > 0
				})
				is.Equal(h.find("serve-error"), []string(nil)) // the server goes on
				testutil.WaitFor(t, "the rate-limited warning", func() bool {
					return strings.Contains(h.stderr.String(), "accept failed; retrying")
				})
			} else {
				testutil.WaitFor(t, "the limit to refuse", func() bool {
					return len(h.find("refused policy max_connections")) > 0
				})
			}
			is.NoErr(h.cmd.Process.Signal(syscall.Signal(0))) // still running
			for _, c := range conns {
				c.Close()
			}
			conns = nil

			// Served again once descriptors and slots are free (the
			// helper frees a slot when it sees its client gone), on both
			// listeners.
			var got string
			testutil.WaitFor(t, "a policy answer", func() bool {
				var err error
				got, err = policyAsk(h.policyAddr, "192.0.2.66")
				return err == nil
			})
			is.Equal(got, refused)
			got, err := policyAsk(h.policyAddr, "192.0.2.1")
			is.NoErr(err)
			is.Equal(got, "DUNNO")
			testutil.WaitFor(t, "a milter answer", func() bool {
				var err error
				got, err = milterMail(h.milter, "192.0.2.66")
				return err == nil
			})
			is.Equal(got, refused)
			got, err = milterMail(h.milter, "192.0.2.1")
			is.NoErr(err)
			is.Equal(got, "")

			is.Equal(h.find("serve-error"), []string(nil)) // no server stopped
			if !tt.outOfFDs {
				is.Equal(h.find("accept-error"), []string(nil)) // the limit came first
			}
		})
	}
}
