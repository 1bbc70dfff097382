package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// recordNotifier passes each state serve sends on.
type recordNotifier chan string

func (r recordNotifier) notify(state string) error {
	r <- state
	return nil
}

// nextState waits for the next state from states.
func nextState(t *testing.T, states <-chan string) string {
	t.Helper()
	select {
	case s := <-states:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting for a notification")
		return ""
	}
}

// checkReloading checks RELOADING=1 and its MONOTONIC_USEC: this
// boot's CLOCK_MONOTONIC, at most a minute old.
func checkReloading(t *testing.T, state string) {
	t.Helper()
	is := is.New(t)
	first, usec, ok := strings.Cut(state, "\nMONOTONIC_USEC=")
	is.True(ok) // MONOTONIC_USEC sent with RELOADING=1
	is.Equal(first, "RELOADING=1")
	n, err := strconv.ParseInt(usec, 10, 64)
	is.NoErr(err)
	var ts unix.Timespec
	is.NoErr(unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	now := ts.Nano() / 1000
	is.True(n <= now && n > now-60_000_000) // a monotonic time of this moment
}

// TestServeNotifies: serve says READY=1 once it serves, RELOADING=1 and
// READY=1 around a reload by SIGHUP and by a changed file, and
// STOPPING=1 when it starts draining.
func TestServeNotifies(t *testing.T) {
	is := is.New(t)
	cfgPath, sock := writeConfig(t, "")
	cfg, err := rules.Load(cfgPath)
	is.NoErr(err)
	states := make(recordNotifier, 16)
	hup := make(chan struct{}, 1)
	stderr := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- serveWith(ctx, serveOptions{path: cfgPath, cfg: cfg, stdout: io.Discard, stderr: stderr,
			hup: hup, usr1: make(chan struct{}), notify: states})
	}()
	code := -1
	stop := func() int {
		if code == -1 {
			cancel()
			code = <-done
		}
		return code
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Log("server log:\n" + stderr.String())
		}
	})

	is.Equal(nextState(t, states), "READY=1")
	is.Equal(policyAsk(t, "unix", sock, "192.0.2.66"), "action=DUNNO") // serving by then

	hup <- struct{}{}
	checkReloading(t, nextState(t, states))
	is.Equal(nextState(t, states), "READY=1")

	waitFor(t, "the reloader to watch", func() bool { return strings.Contains(stderr.String(), watchingLine) })
	text, err := os.ReadFile(cfgPath)
	is.NoErr(err)
	writeFile(t, cfgPath, string(text)+"[blacklist]\nhosts = [\"192.0.2.66\"]\n")
	checkReloading(t, nextState(t, states))
	is.Equal(nextState(t, states), "READY=1")
	is.True(strings.HasPrefix(policyAsk(t, "unix", sock, "192.0.2.66"), "action=550 5.7.1")) // applied

	is.Equal(stop(), 0)
	if s := nextState(t, states); s != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", s)
	}
	select {
	case s := <-states:
		t.Fatalf("unexpected notification after STOPPING=1: %q", s)
	default:
	}
}

// TestNotifySocketOnTheBinary runs the binary as systemd runs a
// Type=notify service, with NOTIFY_SOCKET naming a datagram socket.
func TestNotifySocketOnTheBinary(t *testing.T) {
	is := is.New(t)
	bin := testBinary(t)
	cfgPath, sock := writeConfig(t, "")
	notifyPath := filepath.Join(t.TempDir(), "notify.sock")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	is.NoErr(err)
	defer ns.Close()
	recv := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		ns.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := ns.Read(buf)
		if err != nil {
			t.Fatalf("waiting for a notification: %v", err)
		}
		return string(buf[:n])
	}

	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	is.NoErr(cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Log("server log:\n" + stderr.String())
		}
	})

	is.Equal(recv(), "READY=1")
	_, err = os.Stat(sock)
	is.NoErr(err)                                                     // the listener is open at READY=1
	is.Equal(policyAsk(t, "unix", sock, "192.0.2.1"), "action=DUNNO") // and served

	is.NoErr(cmd.Process.Signal(syscall.SIGHUP))
	checkReloading(t, recv())
	is.Equal(recv(), "READY=1")

	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	is.Equal(recv(), "STOPPING=1")
	is.NoErr(cmd.Wait()) // exit 0 after draining
}

// TestServiceNotifierOrder: a reload says nothing before the server's
// first READY=1, nor after STOPPING=1.
func TestServiceNotifierOrder(t *testing.T) {
	is := is.New(t)
	states := make(recordNotifier, 16)
	n := newServiceNotifier(states)
	reloads := n.reloads()
	for _, step := range []struct {
		n     notifier
		state string
	}{
		{reloads, "RELOADING=1"}, {reloads, "READY=1"}, // a SIGHUP at start, before serving
		{n, "READY=1"},
		{reloads, "RELOADING=1"}, {reloads, "READY=1"},
		{n, "STOPPING=1"},
		{reloads, "RELOADING=1"}, {reloads, "READY=1"}, // a reload ending while draining
	} {
		is.NoErr(step.n.notify(step.state))
	}
	close(states)
	var got []string
	for s := range states {
		got = append(got, s)
	}
	is.Equal(got, []string{"READY=1", "RELOADING=1", "READY=1", "STOPPING=1"})

	// No notifier: nothing to tell, no error.
	quiet := newServiceNotifier(nil)
	is.NoErr(quiet.notify("READY=1"))
	is.NoErr(quiet.reloads().notify("RELOADING=1"))
}
