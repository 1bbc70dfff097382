package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/smtp-interceptor/smtp-interceptor/internal/webauth"
)

// The synopses of admin-user and its subcommands. Flags may come before
// or after the name.
const (
	adminUserAddSynopsis    = "smtp-interceptor admin-user add [-c FILE] NAME"
	adminUserRemoveSynopsis = "smtp-interceptor admin-user remove [-c FILE] NAME"
	adminUserListSynopsis   = "smtp-interceptor admin-user list [-c FILE]"
)

const adminUserUsage = `usage: smtp-interceptor admin-user add|remove|list [-c FILE] [NAME]

  ` + adminUserAddSynopsis + `
  ` + adminUserRemoveSynopsis + `
  ` + adminUserListSynopsis + `

manage the users of the web console, in the file [admin] users_file names
("name:bcrypt-hash" lines; htpasswd -B -n writes them too). add reads the
password from the first line of standard input, or asks for it twice on a
terminal; it has at least 12 characters. The running server reads the
file again within a second of a change.
`

// runAdminUser adds, removes and lists the users of the web console.
func runAdminUser(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, adminUserUsage)
		return exitUsage
	}
	var synopsis string
	switch args[0] {
	case "add":
		synopsis = adminUserAddSynopsis
	case "remove":
		synopsis = adminUserRemoveSynopsis
	case "list":
		synopsis = adminUserListSynopsis
	case "-h", "-help", "--help", "help":
		fmt.Fprint(e.stdout, adminUserUsage)
		// Every subcommand has the same flags.
		fs := flag.NewFlagSet("admin-user", flag.ContinueOnError)
		e.configFlag(fs, "configuration `file` whose [admin] users_file names the web console's users")
		fs.SetOutput(e.stdout)
		fmt.Fprintln(e.stdout, "\nflags:")
		fs.PrintDefaults()
		return exitOK
	default:
		fmt.Fprintf(e.stderr, "admin-user: unknown subcommand %q: want add, remove or list\n\n%s", args[0], adminUserUsage)
		return exitUsage
	}
	name := "admin-user " + args[0]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file` whose [admin] users_file names the web console's users")
	pos, code, done := parseInterspersed(fs, synopsis, args[1:], e)
	if done {
		return code
	}
	var user string
	if args[0] == "list" {
		if len(pos) > 0 {
			fmt.Fprintf(e.stderr, "%s: unexpected argument %q\n", name, pos[0])
			return exitUsage
		}
	} else {
		if len(pos) != 1 {
			fmt.Fprintf(e.stderr, "%s: want one user name, not %d\nusage: %s\n", name, len(pos), synopsis)
			return exitUsage
		}
		user = pos[0]
		if err := webauth.ValidateName(user); err != nil {
			fmt.Fprintf(e.stderr, "%s: %v\n", name, err)
			return exitUsage
		}
	}
	path, ok := usersFile(name, fs, *given, e)
	if !ok {
		return exitUsage
	}
	switch args[0] {
	case "add":
		return adminUserAdd(ctx, name, path, user, e)
	case "remove":
		return adminUserRemove(name, path, user, e)
	}
	return adminUserList(name, path, e)
}

// usersFile returns [admin] users_file of the configuration the command
// names, having said on stderr why when there is none.
func usersFile(name string, fs *flag.FlagSet, given string, e env) (string, bool) {
	path := e.configPath(fs, given)
	cfg, ok := loadConfig(path, e.stderr)
	if !ok {
		return "", false
	}
	if cfg.Admin.UsersFile != "" {
		return cfg.Admin.UsersFile, true
	}
	if path == "" {
		e.noteDefaults(name, path, fs)
		fmt.Fprintf(e.stderr, "%s: the built-in defaults set no admin.users_file: give -c FILE, a configuration whose [admin] section sets users_file\n", name)
	} else {
		fmt.Fprintf(e.stderr, "%s: %s sets no admin.users_file: add users_file = \"users.txt\" (or an absolute path) to its [admin] section\n", name, path)
	}
	return "", false
}

// adminUserAdd sets user's password, read from standard input.
func adminUserAdd(ctx context.Context, name, path, user string, e env) int {
	_, err := os.Stat(path)
	created := errors.Is(err, fs.ErrNotExist)
	replaced := false
	if u, err := webauth.LoadUsers(path, webauth.UsersOptions{}); err == nil {
		replaced = slices.Contains(u.Names(), user)
	}
	password, err := readNewPassword(ctx, e)
	if err != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	if err := webauth.AddUser(path, user, password, bcrypt.DefaultCost); err != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", name, err)
		return exitFail
	}
	switch {
	case replaced:
		fmt.Fprintf(e.stdout, "changed the password of %s in %s\n", user, path)
	case created:
		fmt.Fprintf(e.stdout, "added %s to %s, a new file of mode 0600: the user serve runs as must be able to read it (e.g. chgrp smtp-interceptor %s; chmod 0640 %s)\n", user, path, path, path)
	default:
		fmt.Fprintf(e.stdout, "added %s to %s\n", user, path)
	}
	return exitOK
}

// adminUserRemove removes user.
func adminUserRemove(name, path, user string, e env) int {
	removed, err := webauth.RemoveUser(path, user)
	switch {
	case err != nil:
		fmt.Fprintf(e.stderr, "%s: %v\n", name, err)
		return exitFail
	case !removed:
		fmt.Fprintf(e.stderr, "%s: no user %s in %s\n", name, user, path)
		return exitFail
	}
	fmt.Fprintf(e.stdout, "removed %s from %s\n", user, path)
	return exitOK
}

// adminUserList prints the names of the users, one a line.
func adminUserList(name, path string, e env) int {
	u, err := webauth.LoadUsers(path, webauth.UsersOptions{})
	if err != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", name, err)
		return exitFail
	}
	names := u.Names()
	if len(names) == 0 {
		fmt.Fprintf(e.stdout, "no users in %s\n", path)
		return exitOK
	}
	for _, n := range names {
		fmt.Fprintln(e.stdout, n)
	}
	return exitOK
}

// readNewPassword reads the new password: on a terminal, asked for twice
// on stderr without echo; otherwise the first line of standard input.
func readNewPassword(ctx context.Context, e env) (string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return askPassword(ctx, int(f.Fd()), e.stderr)
	}
	if e.stdin == nil {
		return "", errors.New("no standard input to read the password from")
	}
	sc := bufio.NewScanner(e.stdin)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return "", fmt.Errorf("read the password from standard input: %w", err)
		}
		return "", errors.New("standard input is empty: want the password on its first line")
	}
	password := sc.Text()
	if password == "" {
		return "", errors.New("the first line of standard input is empty: want the password on it")
	}
	if err := webauth.ValidatePassword(password); err != nil {
		return "", err
	}
	return password, nil
}

// askPassword asks for the password twice on the terminal fd.
func askPassword(ctx context.Context, fd int, stderr io.Writer) (string, error) {
	first, err := readTerminal(ctx, fd, "Password: ", stderr)
	if err != nil {
		return "", err
	}
	if err := webauth.ValidatePassword(first); err != nil {
		return "", err
	}
	again, err := readTerminal(ctx, fd, "Again: ", stderr)
	if err != nil {
		return "", err
	}
	if again != first {
		return "", errors.New("the passwords differ")
	}
	return first, nil
}

// readTerminal prompts on stderr and reads a line from the terminal fd
// without echo. When ctx ends first (an interrupt), the terminal gets its
// echo back and the read is left to the process's exit.
func readTerminal(ctx context.Context, fd int, prompt string, stderr io.Writer) (string, error) {
	old, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("read the password from the terminal: %w", err)
	}
	fmt.Fprint(stderr, prompt)
	type line struct {
		b   []byte
		err error
	}
	read := make(chan line, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		read <- line{b, err}
	}()
	select {
	case l := <-read:
		fmt.Fprintln(stderr) // the newline typed was not echoed
		if l.err != nil {
			return "", fmt.Errorf("read the password from the terminal: %w", l.err)
		}
		return string(l.b), nil
	case <-ctx.Done():
		_ = term.Restore(fd, old)
		fmt.Fprintln(stderr)
		return "", fmt.Errorf("no password: %w", context.Cause(ctx))
	}
}
