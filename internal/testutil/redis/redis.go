// Package redis runs a real redis-server for tests: on a free loopback
// port, in a temporary directory, without persistence unless asked, and
// killed when the test ends.
package redis

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// Binary is where Debian's redis-server package installs the server.
const Binary = "/usr/bin/redis-server"

// Server is a redis-server started by Start.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	args []string
	// sentinel, when set, is the configuration file of a Sentinel.
	sentinel string

	mu  sync.Mutex
	cmd *exec.Cmd
	log *testutil.SyncBuffer
	// exited is closed when the current process has been waited for.
	exited chan struct{}
}

// Start runs redis-server on a free loopback port, without persistence
// (an empty --save and --appendonly no) and with args after those (later
// options override earlier ones, so args may turn persistence on). It
// waits until the server answers PING and kills it in t.Cleanup. It fails
// the test if redis-server is not installed.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: binary(t), dir: t.TempDir(), args: args}
	s.run()
	return s
}

// StartSentinel runs a Redis Sentinel (redis-server --sentinel) on a free
// loopback port that monitors master under the name name, with a quorum
// of one, and kills it in t.Cleanup.
func StartSentinel(t testing.TB, master *Server, name string) *Server {
	t.Helper()
	s := &Server{t: t, bin: binary(t), dir: t.TempDir()}
	s.sentinel = filepath.Join(s.dir, "sentinel.conf")
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\n", name, master.Port())
	if err := os.WriteFile(s.sentinel, []byte(conf), 0o600); err != nil {
		t.Fatalf("redis: write sentinel configuration: %v", err)
	}
	s.run()
	return s
}

// binary finds redis-server or fails the test.
func binary(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(Binary); err == nil {
		return Binary
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not installed: apt-get install redis-server")
	}
	return p
}

// run starts the server on a free port, registering its cleanup.
func (s *Server) run() {
	t := s.t
	t.Helper()
	t.Cleanup(s.Stop)
	var err error
	for range 5 { // a free port may be taken before redis-server binds it
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("redis: find a free port: %v", err)
		}
		if err = s.start(); err == nil {
			return
		}
	}
	t.Fatalf("redis: start redis-server: %v", err)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the server on s.port and waits until it answers.
func (s *Server) start() error {
	var args []string
	if s.sentinel != "" {
		args = append(args, s.sentinel, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
	)
	if s.sentinel == "" {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	args = append(args, s.args...)
	cmd := exec.Command(s.bin, args...)
	log := &testutil.SyncBuffer{}
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.log, s.exited = cmd, log, exited
	s.mu.Unlock()

	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(s.Addr())
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited at start: %s", log.String())
		case <-deadline:
			s.Stop()
			return fmt.Errorf("redis-server does not answer on %s: %v; its log: %s", s.Addr(), err, log.String())
		case <-tick.C:
		}
	}
}

// ping sends PING in RESP and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Dir is the server's working directory (where a dump or AOF would go).
func (s *Server) Dir() string { return s.dir }

// Log returns what the current server process printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Stop kills the server (SIGKILL, like a crash) and waits for it to exit.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Logf("redis: kill redis-server: %v", err)
	}
	<-exited
}

// Restart stops the server if it runs and starts it again on the same
// port, with the same options, waiting until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("redis: restart redis-server on %s: %v", s.Addr(), err)
	}
}
