package main

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestSIGPIPE runs the binary with its standard error on a pipe whose
// reader has gone away (issue 11, finding 9): it keeps serving, and a
// refusal (which logs) still gets its answer.
func TestSIGPIPE(t *testing.T) {
	is := is.New(t)
	bin := testBinary(t)
	cfg, sock := writeConfig(t, "[blacklist]\nhosts = [\"192.0.2.0/24\"]\n[log]\nlevel = \"debug\"")
	r, w, err := os.Pipe()
	is.NoErr(err)
	cmd := exec.Command(bin, "serve", "-c", cfg)
	cmd.Stderr = w
	is.NoErr(cmd.Start())
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the socket", func() bool { _, err := os.Stat(sock); return err == nil })
	r.Close() // the log reader goes away
	for range 20 {
		is.True(strings.HasPrefix(policyAsk(t, "unix", sock, "192.0.2.7"), "action=550 5.7.1"))
	}
	is.Equal(policyAsk(t, "unix", sock, "198.51.100.1"), "action=DUNNO")
	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	err = cmd.Wait()
	is.NoErr(err) // exit 0, not killed by SIGPIPE
}

// TestMetricsServerTimeouts: the metrics listener closes idle and slow
// connections (issue 11, finding 10).
func TestMetricsServerTimeouts(t *testing.T) {
	is := is.New(t)
	s := metricsServer(http.NotFoundHandler())
	is.True(s.ReadHeaderTimeout > 0)
	is.True(s.ReadTimeout > 0)
	is.True(s.IdleTimeout > 0)
	is.True(s.WriteTimeout > 90*time.Second) // room for a CPU profile
}
