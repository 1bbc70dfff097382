package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/smtp-interceptor/smtp-interceptor/rules"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

var testLogger = testutil.Logger

// testServer is a running milter server for one test.
type testServer struct {
	srv     *Server
	engine  *rules.Engine
	dns     *rules.MemoryDNS
	network string
	addr    string
	done    chan error
	logs    *testutil.SyncBuffer // the server's log, as text lines
}

// serverSetup changes what startMilterWith builds.
type serverSetup struct {
	// dns replaces the engine's DNS lists (ts.dns then goes unused).
	dns rules.DNSLists
	// opts are the server options; Logger is always set by the helper.
	opts Options
	// logOut, when set, takes the server's log instead of the test log
	// and ts.logs (the fuzz target keeps its log out of memory), from
	// level logLevel up.
	logOut   io.Writer
	logLevel slog.Level
}

// startMilter starts a milter for config text on "tcp" (127.0.0.1:0) or
// "unix" (a socket in a temporary directory); it stops with the test.
func startMilter(t testing.TB, network, config string) *testServer {
	t.Helper()
	return startMilterWith(t, network, config, serverSetup{})
}

// startMilterWith is startMilter with the choices of setup.
func startMilterWith(t testing.TB, network, config string, setup serverSetup) *testServer {
	t.Helper()
	if strings.Contains(config, "[server]") {
		config = strings.Replace(config, "[server]", "[server]\nhostname = \"relay.test\"", 1)
	} else {
		config = "[server]\nhostname = \"relay.test\"\n" + config
	}
	cfg, err := rules.Parse("test.toml", config)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	dns := rules.NewMemoryDNS()
	var lists rules.DNSLists = dns
	if setup.dns != nil {
		lists = setup.dns
	}
	logs := new(testutil.SyncBuffer)
	tlw := &testLogWriter{t: t}
	t.Cleanup(tlw.stop) // registered first: runs after the server's shutdown below
	out, level := io.MultiWriter(logs, tlw), slog.LevelDebug
	if setup.logOut != nil {
		out, level = setup.logOut, setup.logLevel
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	engine := rules.NewEngine(cfg, rules.EngineOptions{DNS: lists, Logger: log})
	opts := setup.opts
	opts.Logger = log
	ts := &testServer{srv: New(engine, opts), engine: engine, dns: dns, network: network, done: make(chan error, 1), logs: logs}
	var ln net.Listener
	if network == "unix" {
		ts.addr = filepath.Join(t.TempDir(), "milter.sock")
		ln, err = net.Listen("unix", ts.addr)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			ts.addr = ln.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.done <- ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
		if err := <-ts.done; err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

// testLogWriter writes log lines to the test log until stop: a session
// goroutine that outlives its test (one cut off by Shutdown's deadline)
// must not log into a finished test, which panics.
type testLogWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// logLines returns the lines of the server's log at level (e.g. "WARN")
// whose text contains substr.
func (ts *testServer) logLines(level, substr string) []string {
	var out []string
	for _, l := range strings.Split(ts.logs.String(), "\n") {
		if strings.Contains(l, "level="+level+" ") && strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// mta plays Postfix: it opens a milter session with the macros Postfix
// would send.
type mta struct {
	t      testing.TB
	s      *gomilter.ClientSession
	macros *gomilter.MacroBag
}

func (ts *testServer) session(t testing.TB, macros map[string]string) *mta {
	t.Helper()
	bag := gomilter.NewMacroBag()
	for k, v := range macros {
		bag.Set(k, v)
	}
	c := gomilter.NewClient(ts.network, ts.addr,
		gomilter.WithActions(gomilter.AllClientSupportedActionMasks),
		gomilter.WithReadTimeout(10*time.Second), gomilter.WithWriteTimeout(10*time.Second))
	s, err := c.Session(bag)
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &mta{t: t, s: s, macros: bag}
}

// reply renders what the SMTP client would see: "" when the milter lets
// the command through, else the SMTP reply.
func reply(act *gomilter.Action, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	switch act.Type {
	case gomilter.ActionContinue, gomilter.ActionAccept, gomilter.ActionSkip:
		return ""
	case gomilter.ActionRejectWithCode:
		return strings.TrimSpace(act.SMTPReply)
	}
	return act.String()
}

func (m *mta) connect(ip, name string) string {
	fam := gomilter.FamilyInet
	if strings.Contains(ip, ":") {
		fam = gomilter.FamilyInet6
	}
	return reply(m.s.Conn(name, fam, 25, ip))
}

// connectFamily sends a connect event with a family given by name
// ("unknown", "unix", "tcp4", "tcp6") and a raw address.
func (m *mta) connectFamily(family, addr string) string {
	fam := map[string]gomilter.ProtoFamily{"unknown": gomilter.FamilyUnknown, "unix": gomilter.FamilyUnix,
		"tcp4": gomilter.FamilyInet, "tcp6": gomilter.FamilyInet6}[family]
	return reply(m.s.Conn("unknown", fam, 0, addr))
}

func (m *mta) helo(name string) string { return reply(m.s.Helo(name)) }
func (m *mta) mail(from string) string { return reply(m.s.Mail(from, "")) }
func (m *mta) rcpt(to string) string   { return reply(m.s.Rcpt(to, "")) }
func (m *mta) data() string            { return reply(m.s.DataStart()) }

// message sends headers and an empty body and returns the end-of-message
// reply and the header changes the milter asked for, as "+Name: value"
// (added) and "-Name#index" (deleted).
func (m *mta) message(headers ...[2]string) (string, []string) {
	m.t.Helper()
	for _, h := range headers {
		if act, err := m.s.HeaderField(h[0], h[1], nil); err != nil || act.Type != gomilter.ActionContinue {
			m.t.Fatalf("header %s: %v %v", h[0], act, err)
		}
	}
	if act, err := m.s.HeaderEnd(); err != nil || act.StopProcessing() {
		m.t.Fatalf("end of headers: %v %v", act, err)
	}
	mods, act, err := m.s.BodyReadFrom(strings.NewReader(""))
	var changes []string
	for _, mod := range mods {
		switch mod.Type {
		case gomilter.ActionAddHeader:
			changes = append(changes, "+"+mod.HeaderName+": "+strings.TrimSpace(mod.HeaderValue))
		case gomilter.ActionChangeHeader:
			if mod.HeaderValue == "" {
				changes = append(changes, fmt.Sprintf("-%s#%d", mod.HeaderName, mod.HeaderIndex))
			}
		default:
			changes = append(changes, mod.String())
		}
	}
	if err != nil {
		return "error: " + err.Error(), changes
	}
	if act.Type == gomilter.ActionAccept || act.Type == gomilter.ActionContinue {
		return "", changes
	}
	return reply(act, nil), changes
}
