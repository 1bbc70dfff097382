package policy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

var testLogger = testutil.Logger

// testServer is a running policy server for one test.
type testServer struct {
	srv    *Server
	engine *rules.Engine
	dns    *rules.MemoryDNS
	addr   string // "tcp" address or "unix:" path
	done   chan error
}

// startServer starts a policy server for config text on network ("tcp"
// on 127.0.0.1:0, or "unix" in a temporary directory). It stops with the
// test.
func startServer(t testing.TB, network, config string) *testServer {
	t.Helper()
	return startServerWith(t, network, config, Options{})
}

// startServerWith is startServer with server options; a nil Logger logs
// to the test.
func startServerWith(t testing.TB, network, config string, opts Options) *testServer {
	t.Helper()
	cfg, err := rules.Parse("test.toml", config)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	dns := rules.NewMemoryDNS()
	engine := rules.NewEngine(cfg, rules.EngineOptions{DNS: dns, Logger: testLogger(t)})
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv := New(engine, opts)
	var ln net.Listener
	addr := ""
	switch network {
	case "unix":
		path := filepath.Join(t.TempDir(), "policy.sock")
		ln, err = net.Listen("unix", path)
		addr = "unix:" + path
	default:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addr = ln.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, engine: engine, dns: dns, addr: addr, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

// dial connects to the server.
func (ts *testServer) dial(t testing.TB) *client {
	t.Helper()
	network, addr := "tcp", ts.addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

// client speaks the policy protocol as Postfix does.
type client struct {
	c net.Conn
	r *bufio.Reader
}

// send writes one request (attribute lines, no final empty line) and
// returns the action of the reply, or an error when the server closed the
// connection without replying.
func (c *client) send(attrs string) (string, error) {
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write([]byte(strings.TrimRight(attrs, "\n") + "\n\n")); err != nil {
		return "", err
	}
	return c.readReply()
}

func (c *client) readReply() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	end, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if end != "\n" {
		return "", errors.New("reply not ended by an empty line: " + end)
	}
	action, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	if !ok {
		return "", errors.New("reply without action=: " + line)
	}
	return action, nil
}

// rcpt builds a typical RCPT request.
func rcpt(client, instance, recipient string) string {
	return "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=" + client +
		"\nclient_name=unknown\nhelo_name=mail.example.com\nsender=a@example.com\nrecipient=" + recipient +
		"\ninstance=" + instance
}

// receive returns the next value of ch, failing the test after 20 seconds.
func receive[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting on a channel")
		panic("unreachable")
	}
}
