package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// built is the binary that tests run as an administrator would, built
// once per test run by testBinary and removed by TestMain.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
	out  []byte
}

// testBinary returns the path of the smtp-interceptor binary built from
// this package, building it on first use.
func testBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "smtp-interceptor-test-bin")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "smtp-interceptor")
		built.out, built.err = exec.Command("go", "build", "-o", built.path, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// waitSocket waits until the unix socket at sock accepts connections: its
// file appears at bind, a moment before it listens.
func waitSocket(t *testing.T, sock string) {
	t.Helper()
	waitFor(t, "the socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// startServeBinary runs the built binary's serve on cfg, its standard
// error captured, and kills it when the test ends.
func startServeBinary(t *testing.T, cfg string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(testBinary(t), "serve", "-c", cfg)
	stderr := new(syncBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stderr
}
