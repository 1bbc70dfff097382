package main

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
	"golang.org/x/crypto/bcrypt"

	"github.com/smtp-interceptor/smtp-interceptor/internal/webauth"
)

// runAdminUserWith runs admin-user in-process with stdin.
func runAdminUserWith(ctx context.Context, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	e := testEnv(&out, &errb)
	e.stdin = stdin
	code = runAdminUser(ctx, args, e)
	return code, out.String(), errb.String()
}

// usersConfig writes a configuration whose [admin] users_file is
// users.txt next to it, and returns its path and the users file's.
func usersConfig(t *testing.T) (cfg, users string) {
	t.Helper()
	cfg, _ = writeConfig(t, "[admin]\nusers_file = \"users.txt\"\n")
	return cfg, filepath.Join(filepath.Dir(cfg), "users.txt")
}

func TestAdminUser(t *testing.T) {
	is := is.New(t)
	cfg, users := usersConfig(t)
	in := strings.NewReader

	for _, step := range []struct {
		name   string
		stdin  io.Reader
		args   []string
		code   int
		stdout string             // "" for none
		stderr string             // in stderr; "" for none at all
		check  func(t *testing.T) // instead of running a command
	}{
		{"list, no file yet", nil, []string{"list", "-c", cfg}, exitFail, "",
			"admin-user list: users file: open " + users + ": no such file or directory", nil},
		{"remove, no file yet", nil, []string{"remove", "-c", cfg, "alice"}, exitFail, "",
			"admin-user remove: users file: open " + users + ": no such file or directory", nil},
		{"add, the file created", in("alice password 1\n"), []string{"add", "-c", cfg, "alice"}, exitOK,
			"added alice to " + users + ", a new file of mode 0600: the user serve runs as must be able to read it (e.g. chgrp smtp-interceptor " + users + "; chmod 0640 " + users + ")\n", "", nil},
		{"add, a line ending in CRLF, flags after the name", in("bob's password\r\nignored\n"), []string{"add", "bob.smith@example.org", "-c", cfg}, exitOK,
			"added bob.smith@example.org to " + users + "\n", "", nil},
		{"add again replaces", in("alice password 2"), []string{"add", "-c", cfg, "alice"}, exitOK,
			"changed the password of alice in " + users + "\n", "", nil},
		{"list", nil, []string{"list", "-c", cfg}, exitOK, "alice\nbob.smith@example.org\n", "", nil},
		{name: "the server loads the file", check: func(t *testing.T) {
			is := is.New(t)
			u, err := webauth.LoadUsers(users, webauth.UsersOptions{})
			is.NoErr(err)
			is.Equal(u.Names(), []string{"alice", "bob.smith@example.org"})
			is.True(u.Check("alice", "alice password 2"))               // the password replaced
			is.True(u.Check("bob.smith@example.org", "bob's password")) // without the line ending
			b, err := os.ReadFile(users)
			is.NoErr(err)
			lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			is.Equal(len(lines), 2)
			for _, l := range lines {
				_, hash, _ := strings.Cut(l, ":")
				cost, err := bcrypt.Cost([]byte(hash))
				is.NoErr(err)
				is.Equal(cost, bcrypt.DefaultCost)
			}
			fi, err := os.Stat(users)
			is.NoErr(err)
			is.Equal(fi.Mode().Perm(), fs.FileMode(0o600))
		}},
		{"a short password", in("short\n"), []string{"add", "-c", cfg, "carol"}, exitUsage, "",
			"admin-user add: the password has 5 characters: want at least 12\n", nil},
		{"11 characters", in("eleven char\n"), []string{"add", "-c", cfg, "carol"}, exitUsage, "",
			"the password has 11 characters: want at least 12", nil},
		{"an empty first line", in("\ncarol's password\n"), []string{"add", "-c", cfg, "carol"}, exitUsage, "",
			"admin-user add: the first line of standard input is empty: want the password on it\n", nil},
		{"empty standard input", in(""), []string{"add", "-c", cfg, "carol"}, exitUsage, "",
			"admin-user add: standard input is empty: want the password on its first line\n", nil},
		{"no standard input", nil, []string{"add", "-c", cfg, "carol"}, exitUsage, "",
			"admin-user add: no standard input to read the password from\n", nil},
		{"a bad name", in("carol's password\n"), []string{"add", "-c", cfg, "carol smith"}, exitUsage, "",
			`admin-user add: user name "carol smith": ' ' is not allowed`, nil},
		{"no name", in("carol's password\n"), []string{"add", "-c", cfg}, exitUsage, "",
			"admin-user add: want one user name, not 0\nusage: " + adminUserAddSynopsis + "\n", nil},
		{"two names", in("carol's password\n"), []string{"add", "-c", cfg, "carol", "dave"}, exitUsage, "",
			"admin-user add: want one user name, not 2\n", nil},
		{"list takes no name", nil, []string{"list", "-c", cfg, "alice"}, exitUsage, "",
			"admin-user list: unexpected argument \"alice\"\n", nil},
		{"a bad flag", nil, []string{"add", "--nope", "alice"}, exitUsage, "",
			"admin-user add: flag provided but not defined: -nope\nusage: " + adminUserAddSynopsis, nil},
		{"remove", nil, []string{"remove", "-c", cfg, "bob.smith@example.org"}, exitOK,
			"removed bob.smith@example.org from " + users + "\n", "", nil},
		{"remove again", nil, []string{"remove", "-c", cfg, "bob.smith@example.org"}, exitFail, "",
			"admin-user remove: no user bob.smith@example.org in " + users + "\n", nil},
		{"list after", nil, []string{"list", "-c", cfg}, exitOK, "alice\n", "", nil},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.check != nil {
				step.check(t)
				return
			}
			is := is.New(t)
			code, stdout, stderr := runAdminUserWith(context.Background(), step.stdin, step.args...)
			is.Equal(code, step.code)
			is.Equal(stdout, step.stdout)
			if step.stderr == "" {
				is.Equal(stderr, "")
			} else {
				is.True(strings.Contains(stderr, step.stderr)) // stderr says it
			}
		})
	}

	u, err := webauth.LoadUsers(users, webauth.UsersOptions{})
	is.NoErr(err)
	is.Equal(u.Names(), []string{"alice"})
}

func TestAdminUserNoUsersFile(t *testing.T) {
	cfg, _ := writeConfig(t, "[admin]\nlisten = \"127.0.0.1:10063\"\n")
	for _, tc := range []struct {
		name   string
		args   []string
		stderr []string
	}{
		{"add", []string{"add", "-c", cfg, "alice"},
			[]string{"admin-user add: " + cfg + " sets no admin.users_file: add users_file = \"users.txt\" (or an absolute path) to its [admin] section\n"}},
		{"list", []string{"list", "-c", cfg},
			[]string{"admin-user list: " + cfg + " sets no admin.users_file"}},
		{"remove", []string{"remove", "-c", cfg, "alice"},
			[]string{"admin-user remove: " + cfg + " sets no admin.users_file"}},
		{"the built-in defaults", []string{"list"}, []string{
			"admin-user list: no -c and no " + noDefaultConfig + ": using the built-in defaults",
			"admin-user list: the built-in defaults set no admin.users_file: give -c FILE",
		}},
		{"-c \"\"", []string{"list", "-c", ""}, []string{
			"admin-user list: -c \"\": using the built-in defaults",
			"the built-in defaults set no admin.users_file",
		}},
		{"a bad configuration", []string{"list", "-c", filepath.Join(t.TempDir(), "missing.toml")}, []string{"smtp-interceptor: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			code, stdout, stderr := runAdminUserWith(context.Background(), strings.NewReader("alice password 1\n"), tc.args...)
			is.Equal(code, exitUsage)
			is.Equal(stdout, "")
			for _, w := range tc.stderr {
				is.True(strings.Contains(stderr, w)) // stderr says w
			}
		})
	}
}

func TestAdminUserUsage(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string // prefixes
	}{
		{nil, exitUsage, "", "usage: smtp-interceptor admin-user add|remove|list"},
		{[]string{"-h"}, exitOK, "usage: smtp-interceptor admin-user add|remove|list", ""},
		{[]string{"--help"}, exitOK, "usage: smtp-interceptor admin-user add|remove|list", ""},
		{[]string{"help"}, exitOK, "usage: smtp-interceptor admin-user add|remove|list", ""},
		{[]string{"add", "-h"}, exitOK, "usage: " + adminUserAddSynopsis + "\n\nflags:\n  -c file", ""},
		{[]string{"remove", "--help"}, exitOK, "usage: " + adminUserRemoveSynopsis, ""},
		{[]string{"list", "-help"}, exitOK, "usage: " + adminUserListSynopsis, ""},
		{[]string{"rename", "alice"}, exitUsage, "", "admin-user: unknown subcommand \"rename\": want add, remove or list\n\nusage:"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			is := is.New(t)
			code, stdout, stderr := runAdminUserWith(context.Background(), nil, tc.args...)
			is.Equal(code, tc.code)
			is.True(strings.HasPrefix(stdout, tc.stdout)) // stdout
			is.True(strings.HasPrefix(stderr, tc.stderr)) // stderr
			is.Equal(stdout == "", tc.stdout == "")
			is.Equal(stderr == "", tc.stderr == "")
		})
	}
}
