package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"

	"github.com/smtp-interceptor/smtp-interceptor/internal/webauth"
)

// openPTY opens a pseudo-terminal and returns its controlling side (what
// a user types into) and its terminal, closed at the end of the test.
func openPTY(t *testing.T) (ctl, tty *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal (Linux has /dev/ptmx and /dev/pts): %v", err)
	}
	n, err := unix.IoctlGetUint32(int(ctl.Fd()), unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(ctl.Fd()), unix.TIOCSPTLCK, 0)
	}
	if err != nil {
		ctl.Close()
		t.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ctl.Close()
		t.Fatalf("no pseudo-terminal (Linux has /dev/ptmx and /dev/pts): %v", err)
	}
	// The controlling side first: a read left waiting on the terminal
	// (the interrupted prompt) then ends.
	t.Cleanup(func() { ctl.Close(); tty.Close() })
	return ctl, tty
}

// echoes reports whether the terminal echoes what is typed.
func echoes(t *testing.T, tty *os.File) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

// TestAdminUserTerminal: on a terminal, add asks for the password twice
// without echo.
func TestAdminUserTerminal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typed  string
		code   int
		stderr string
		ok     bool // the password is set
	}{
		{"the same twice", "terminal password\nterminal password\n", exitOK, "Password: \nAgain: \n", true},
		{"they differ", "terminal password\nterminal passw0rd\n", exitUsage, "Password: \nAgain: \nadmin-user add: the passwords differ\n", false},
		{"too short", "short\n", exitUsage, "Password: \nadmin-user add: the password has 5 characters: want at least 12\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			cfg, users := usersConfig(t)
			ctl, tty := openPTY(t)
			_, err := ctl.WriteString(tc.typed)
			is.NoErr(err)
			code, stdout, stderr := runAdminUserWith(context.Background(), tty, "add", "-c", cfg, "alice")
			is.Equal(code, tc.code)
			is.Equal(stderr, tc.stderr)
			is.True(echoes(t, tty)) // the echo is back
			if !tc.ok {
				is.Equal(stdout, "")
				_, err := os.Stat(users)
				is.True(os.IsNotExist(err)) // no file written
				return
			}
			is.True(strings.HasPrefix(stdout, "added alice to "+users))
			u, err := webauth.LoadUsers(users, webauth.UsersOptions{})
			is.NoErr(err)
			is.True(u.Check("alice", "terminal password"))
		})
	}
}

// TestAdminUserTerminalInterrupted: an interrupt at the prompt ends add
// with the terminal's echo back.
func TestAdminUserTerminalInterrupted(t *testing.T) {
	is := is.New(t)
	cfg, users := usersConfig(t)
	ctl, tty := openPTY(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var code int
	var stderr string
	go func() {
		defer close(done)
		code, _, stderr = runAdminUserWith(ctx, tty, "add", "-c", cfg, "alice")
	}()
	waitFor(t, "the echo turned off", func() bool { return !echoes(t, tty) })
	cancel()
	<-done
	is.Equal(code, exitUsage)
	is.Equal(stderr, "Password: \nadmin-user add: no password: context canceled\n")
	is.True(echoes(t, tty)) // the echo is back
	_, err := os.Stat(users)
	is.True(os.IsNotExist(err))

	// The read left waiting takes a line, and ends before the terminal
	// is closed.
	_, err = ctl.WriteString("\n")
	is.NoErr(err)
	waitFor(t, "the line read", func() bool {
		n, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCINQ)
		return err == nil && n == 0
	})
}
