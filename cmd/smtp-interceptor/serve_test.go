package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

var waitFor = testutil.WaitFor

type syncBuffer = testutil.SyncBuffer

// writeConfig writes a config whose policy listener is a unix socket in a
// temporary directory, and returns the config path and the socket path.
func writeConfig(t *testing.T, extra string) (cfgPath, sock string) {
	t.Helper()
	dir := t.TempDir()
	sock = filepath.Join(dir, "policy.sock")
	cfgPath = filepath.Join(dir, "config.toml")
	text := fmt.Sprintf("[server]\npolicy = [\"unix:%s\"]\nmilter = []\nmetrics = \"\"\n[dns]\nresolver = \"127.0.0.1:1\"\n%s", sock, extra)
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, sock
}

// client is a policy connection.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialPolicy(t *testing.T, network, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// ask sends one request and returns the reply's action.
func (c *client) ask(req string) string {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write([]byte(req)); err != nil {
		c.t.Fatal(err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatal(err)
	}
	c.r.ReadString('\n')
	return strings.TrimPrefix(strings.TrimSpace(line), "action=")
}

var instanceSeq atomic.Int64

// policyAsk asks once, on a new connection, about a new message.
func policyAsk(t *testing.T, network, addr, ip string) string {
	t.Helper()
	c := dialPolicy(t, network, addr)
	defer c.c.Close()
	return "action=" + c.ask(fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=%s\nclient_name=unknown\nhelo_name=x.example\nsender=a@example.com\nrecipient=b@domino.test\ninstance=t.%d\n\n", ip, instanceSeq.Add(1)))
}

func TestServe(t *testing.T) {
	is := is.New(t)
	cfg, sock := writeConfig(t, "[blacklist]\nhosts = [\"192.0.2.66\"]")
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "-c", cfg}, testEnv(&bytes.Buffer{}, &stderr)) }()
	waitSocket(t, sock)
	is.Equal(policyAsk(t, "unix", sock, "192.0.2.66"), "action=550 5.7.1 Connection denied based on policy reason")
	is.Equal(policyAsk(t, "unix", sock, "192.0.2.1"), "action=DUNNO")
	cancel() // SIGTERM
	is.Equal(<-done, 0)
	is.True(strings.Contains(stderr.String(), "stopped"))
	_, err := os.Stat(sock)
	is.True(os.IsNotExist(err)) // the socket is removed
}

func TestServeBindError(t *testing.T) {
	is := is.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	defer ln.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	is.NoErr(os.WriteFile(cfg, []byte(fmt.Sprintf("[server]\npolicy = [\"%s\"]\nmilter = []\nmetrics = \"\"\n[dns]\nresolver = \"127.0.0.1:1\"\n", ln.Addr())), 0o644))
	code, _, stderr := runCmd("serve", "-c", cfg)
	is.Equal(code, 1)
	is.True(strings.Contains(stderr, ln.Addr().String())) // names the address
}

// TestServeBinarySIGTERM runs the built binary and stops it as systemd
// would.
func TestServeBinarySIGTERM(t *testing.T) {
	is := is.New(t)
	bin := testBinary(t)
	cfg, sock := writeConfig(t, "")
	cmd := exec.Command(bin, "serve", "-c", cfg)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	is.NoErr(cmd.Start())
	waitSocket(t, sock)
	is.Equal(policyAsk(t, "unix", sock, "192.0.2.1"), "action=DUNNO")
	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	is.NoErr(cmd.Wait()) // exit 0
	is.True(strings.Contains(stderr.String(), "draining"))
}

func TestBenchPolicy(t *testing.T) {
	is := is.New(t)
	cfg, sock := writeConfig(t, "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]\naction = \"reject\"")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "-c", cfg}, testEnv(&bytes.Buffer{}, &bytes.Buffer{})) }()
	defer func() { cancel(); <-done }()
	waitSocket(t, sock)

	code, stdout, stderr := runCmd("bench", "policy", "--addr", "unix:"+sock, "--conns", "4", "-n", "2000", "--hit", "0.5")
	t.Log(stdout, stderr)
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "2000 requests in"))
	is.True(strings.Contains(stdout, "requests/s"))
	is.True(strings.Contains(stdout, "p99"))
	is.True(strings.Contains(stdout, "550 5.7.1")) // the hits were refused
	is.True(strings.Contains(stdout, "DUNNO"))
	is.True(!strings.Contains(stdout, "errors"))
}

func TestServeMilterAndBench(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	msock := filepath.Join(dir, "milter.sock")
	psock := filepath.Join(dir, "policy.sock")
	cfg := filepath.Join(dir, "c.toml")
	is.NoErr(os.WriteFile(cfg, []byte(fmt.Sprintf(`[server]
policy = ["unix:%s"]
milter = ["unix:%s"]
metrics = ""
socket_mode = "0600"
[dns]
resolver = "127.0.0.1:1"
[private_blacklist]
enabled = true
hosts = ["203.0.113.0/24"]
action = "reject"
`, psock, msock)), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "-c", cfg}, testEnv(&bytes.Buffer{}, &bytes.Buffer{})) }()
	waitFor(t, "both sockets", func() bool {
		_, e1 := os.Stat(msock)
		_, e2 := os.Stat(psock)
		return e1 == nil && e2 == nil
	})
	fi, err := os.Stat(msock)
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o600)) // socket_mode

	code, stdout, stderr := runCmd("bench", "milter", "--addr", "unix:"+msock, "--conns", "4", "-n", "200", "--hit", "0.5")
	t.Log(stdout, stderr)
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "200 transactions in"))
	is.True(strings.Contains(stdout, "transactions/s"))
	is.True(strings.Contains(stdout, "550 5.7.1")) // the blacklisted clients
	is.True(strings.Contains(stdout, "accept"))
	is.True(!strings.Contains(stdout, "errors"))
	cancel()
	is.Equal(<-done, 0)
}

func TestBenchNullServers(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	for _, kind := range []string{"policy", "milter"} {
		sock := filepath.Join(dir, kind+".sock")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"bench", "null-" + kind, "--listen", "unix:" + sock}, testEnv(&bytes.Buffer{}, &bytes.Buffer{}))
		}()
		waitSocket(t, sock)
		code, stdout, _ := runCmd("bench", kind, "--addr", "unix:"+sock, "--conns", "2", "-n", "100")
		is.Equal(code, 0)
		if kind == "policy" {
			is.True(strings.Contains(stdout, "DUNNO                                    100"))
		} else {
			is.True(strings.Contains(stdout, "accept                                   100"))
		}
		cancel()
		is.Equal(<-done, 0)
	}
}
