package webauth

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"golang.org/x/crypto/bcrypt"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// The passwords of testdata/users.txt.
const (
	alicePassword = "correct horse battery"      // htpasswd -B, $2y$
	bobPassword   = "tr0ub4dor&3xyz"             // htpasswd -B, $2y$
	carolPassword = "correctbatteryhorsestapler" // Python's bcrypt, $2b$
	davePassword  = "dave's long passphrase"     // Go's bcrypt, $2a$
)

func TestLoadUsers(t *testing.T) {
	is := is.New(t)
	u, err := LoadUsers("testdata/users.txt", UsersOptions{})
	is.NoErr(err)
	is.Equal(u.Names(), []string{"alice", "bob.smith@example.org", "carol", "dave_2"})
	crlf, err := LoadUsers("testdata/users-crlf.txt", UsersOptions{})
	is.NoErr(err)
	is.Equal(crlf.Names(), []string{"alice"})

	for _, tc := range []struct {
		users          *Users
		name, password string
		want           bool
	}{
		{u, "alice", alicePassword, true},
		{u, "bob.smith@example.org", bobPassword, true},
		{u, "carol", carolPassword, true},
		{u, "dave_2", davePassword, true},
		{u, "alice", bobPassword, false},
		{u, "alice", alicePassword + " ", false},
		{u, "alice", "", false},
		{u, "Alice", alicePassword, false}, // names are case-sensitive
		{u, "nobody", alicePassword, false},
		{u, "", "", false},
		{crlf, "alice", alicePassword, true}, // the \r is not the hash's
	} {
		t.Run(tc.name+"/"+tc.password, func(t *testing.T) {
			is.New(t).Equal(tc.users.Check(tc.name, tc.password), tc.want)
		})
	}
}

func TestLoadUsersBad(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string // in the error
	}{
		{"bad-no-colon.txt", []string{`testdata/bad-no-colon.txt line 3: want name:bcrypt-hash, found no ":"`}},
		{"bad-name.txt", []string{`testdata/bad-name.txt line 2: user name "root!": '!' is not allowed`}},
		{"bad-duplicate.txt", []string{`testdata/bad-duplicate.txt line 4: user "alice" again (first on line 2)`}},
		{"bad-apr1.txt", []string{`testdata/bad-apr1.txt line 2: user "alice": an htpasswd MD5 ($apr1$) hash, not bcrypt`, "htpasswd -B"}},
		{"bad-sha.txt", []string{`testdata/bad-sha.txt line 1: user "alice": an htpasswd SHA-1 ({SHA}) hash`}},
		{"bad-2x.txt", []string{`testdata/bad-2x.txt line 1: user "alice": a $2x$ hash`}},
		{"bad-truncated.txt", []string{`testdata/bad-truncated.txt line 1: user "alice": a bcrypt hash is 60 characters, this one 53`}},
		{"bad-cost.txt", []string{`testdata/bad-cost.txt line 1: user "alice": cost 3 out of range: want 4 to 31`}},
		{"bad-no-hash.txt", []string{`testdata/bad-no-hash.txt line 1: user "alice": no hash`}},
		{"bad-several.txt", []string{
			`testdata/bad-several.txt line 3: want name:bcrypt-hash`,
			`testdata/bad-several.txt line 5: user name "nnnnnnnnnnnnnnnnnnnn"... is 65 bytes: at most 64`,
		}},
		{"missing.txt", []string{"users file: open testdata/missing.txt: no such file or directory"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			is := is.New(t)
			u, err := LoadUsers(filepath.Join("testdata", tc.file), UsersOptions{})
			is.True(err != nil)
			is.True(u == nil)
			for _, w := range tc.want {
				is.True(strings.Contains(err.Error(), w)) // the error says w
			}
			if tc.file == "bad-several.txt" {
				is.True(!strings.Contains(err.Error(), "line 1:")) // good lines are not named
				is.True(!strings.Contains(err.Error(), "line 4:"))
			}
		})
	}
}

func TestCheckHash(t *testing.T) {
	good := "$2y$04$hCwW91TWyaIKfdilrociduN331oO9kRMOpLWC4BS3sGPYLG30aQl."
	for _, tc := range []struct {
		hash string
		want string // "" for none
	}{
		{good, ""},
		{"$2a$" + good[4:], ""},
		{"$2b$" + good[4:], ""},
		{"$2$04$" + good[7:], "not a bcrypt hash"},
		{"$2y$+4$" + good[7:], `bad cost "+4$"`},
		{"$2y$32$" + good[7:], "cost 32 out of range"},
		{"$2y$04" + good[6:59] + "!", "'!' is not a character"},
		{"$2y$04$" + good[7:] + "x", "this one 61"},
		{"plain text password", "not a bcrypt hash"},
	} {
		t.Run(tc.hash, func(t *testing.T) {
			is := is.New(t)
			err := checkHash(tc.hash)
			if tc.want == "" {
				is.NoErr(err)
				return
			}
			is.True(err != nil)
			is.True(strings.Contains(err.Error(), tc.want)) // the error says what is wrong
		})
	}
}

// countingCompare wraps u's comparison to record the hashes compared with.
func countingCompare(u *Users) *[]string {
	var mu sync.Mutex
	var seen []string
	next := u.compare
	u.compare = func(hash, password []byte) error {
		mu.Lock()
		seen = append(seen, string(hash))
		mu.Unlock()
		return next(hash, password)
	}
	return &seen
}

func TestCheckUnknownCostsTheSame(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "users.txt")
	is.NoErr(AddUser(path, "alice", alicePassword, bcrypt.MinCost))
	is.NoErr(AddUser(path, "bob", bobPassword, bcrypt.MinCost))
	is.NoErr(AddUser(path, "carol", carolPassword, bcrypt.MinCost+1))
	u, err := LoadUsers(path, UsersOptions{})
	is.NoErr(err)
	seen := countingCompare(u)

	for _, tc := range []struct {
		name string
		want bool
	}{
		{"alice", true},
		{"nobody", false},
		{strings.Repeat("x", 1000), false},
	} {
		*seen = nil
		is.Equal(u.Check(tc.name, alicePassword), tc.want)
		is.Equal(len(*seen), 1) // one bcrypt comparison, whether the name exists or not
		cost, err := bcrypt.Cost([]byte((*seen)[0]))
		is.NoErr(err)
		is.Equal(cost, bcrypt.MinCost) // at the cost most users have
	}
}

func TestDummyFor(t *testing.T) {
	h := func(cost int) []byte {
		b, err := bcrypt.GenerateFromPassword([]byte("a password of some length"), cost)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	four, five := h(4), h(5)
	for _, tc := range []struct {
		name   string
		hashes map[string][]byte
		want   int
	}{
		{"no users", nil, bcrypt.DefaultCost},
		{"one cost", map[string][]byte{"a": four}, 4},
		{"the most common", map[string][]byte{"a": four, "b": five, "c": five}, 5},
		{"the higher on a tie", map[string][]byte{"a": four, "b": five}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			d := dummyFor(tc.hashes)
			cost, err := bcrypt.Cost(d)
			is.NoErr(err)
			is.Equal(cost, tc.want)
			is.NoErr(checkHash(string(d)))
		})
	}
}

// logBuffer returns a logger that writes to the returned buffer.
func logBuffer() (*slog.Logger, *testutil.SyncBuffer) {
	var b testutil.SyncBuffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

func TestUsersReload(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "users.txt")
	is.NoErr(AddUser(path, "alice", alicePassword, bcrypt.MinCost))
	clock := testutil.NewClock(t0)
	log, logged := logBuffer()
	u, err := LoadUsers(path, UsersOptions{Logger: log, Now: clock.Now})
	is.NoErr(err)
	good := func() string {
		b, err := os.ReadFile(path)
		is.NoErr(err)
		return string(b)
	}

	for _, step := range []struct {
		name    string
		change  func()
		advance time.Duration
		names   []string
		log     string // in the log since the step before
	}{
		{
			name:    "bob added, looked at within the second",
			change:  func() { is.NoErr(AddUser(path, "bob", bobPassword, bcrypt.MinCost)) },
			advance: ReloadInterval - time.Millisecond,
			names:   []string{"alice"},
		},
		{
			name:    "the second passed",
			advance: time.Millisecond,
			names:   []string{"alice", "bob"},
			log:     "users file read again",
		},
		{
			name: "a bad file keeps the users",
			change: func() {
				is.NoErr(os.WriteFile(path, []byte(good()+"carol:$apr1$uK7jOusA$RNyHuHxo7hwYOtORwLYrF.\n"), 0o600))
			},
			advance: ReloadInterval,
			names:   []string{"alice", "bob"},
			log:     "line 3: user \\\"carol\\\": an htpasswd MD5",
		},
		{
			name:    "the bad file is not read again",
			advance: ReloadInterval,
			names:   []string{"alice", "bob"},
		},
		{
			name: "fixed",
			change: func() {
				_, err := RemoveUser(path, "carol") // removing the bad line is allowed
				is.NoErr(err)
				is.NoErr(AddUser(path, "carol", carolPassword, bcrypt.MinCost))
			},
			advance: ReloadInterval,
			names:   []string{"alice", "bob", "carol"},
			log:     "users=3",
		},
		{
			name:    "removed",
			change:  func() { is.NoErr(os.Remove(path)) },
			advance: ReloadInterval,
			names:   []string{"alice", "bob", "carol"},
			log:     "cannot read it",
		},
		{
			name:    "still removed: no new warning",
			advance: ReloadInterval,
			names:   []string{"alice", "bob", "carol"},
		},
		{
			name: "back, with another user",
			change: func() {
				is.NoErr(AddUser(path, "dave", davePassword, bcrypt.MinCost))
			},
			advance: ReloadInterval,
			names:   []string{"dave"},
			log:     "users file read again",
		},
	} {
		before := len(logged.String())
		if step.change != nil {
			step.change()
		}
		clock.Advance(step.advance)
		is.Equal(u.Names(), step.names) // step.name
		got := logged.String()[before:]
		if step.log == "" {
			is.Equal(got, "") // nothing logged: step.name
		} else {
			is.True(strings.Contains(got, step.log)) // step.name: the log says step.log
		}
	}
	is.True(u.Check("dave", davePassword))
	is.True(!u.Check("alice", alicePassword))
}

func TestAddUser(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "users.txt")
	const head = "# console users\n\n"
	is.NoErr(os.WriteFile(path, []byte(head+"zed:$2y$04$hCwW91TWyaIKfdilrociduN331oO9kRMOpLWC4BS3sGPYLG30aQl.\r\n# after zed\nlast:$2y$04$QyVgykAUFq/9wkQSY.wY2eVI1gjMnQQpknswcARQsFc1tlbYkl1Fq"), 0o640))

	for _, step := range []struct {
		name, user, password string
		lines                []string // the file's lines but for the hashes
	}{
		{"added at the end", "alice", alicePassword,
			[]string{"# console users", "", "zed:", "# after zed", "last:", "alice:"}},
		{"replaced in place", "zed", bobPassword,
			[]string{"# console users", "", "zed:", "# after zed", "last:", "alice:"}},
		{"again", "alice", carolPassword,
			[]string{"# console users", "", "zed:", "# after zed", "last:", "alice:"}},
	} {
		is.NoErr(AddUser(path, step.user, step.password, bcrypt.MinCost)) // step.name
		b, err := os.ReadFile(path)
		is.NoErr(err)
		var lines []string
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			name, _, ok := strings.Cut(l, ":")
			if ok {
				l = name + ":"
			}
			lines = append(lines, l)
		}
		is.Equal(lines, step.lines) // step.name
		u, err := LoadUsers(path, UsersOptions{})
		is.NoErr(err)
		is.True(u.Check(step.user, step.password)) // step.name
		fi, err := os.Stat(path)
		is.NoErr(err)
		is.Equal(fi.Mode().Perm(), fs.FileMode(0o640)) // the mode stays
	}
	u, err := LoadUsers(path, UsersOptions{})
	is.NoErr(err)
	is.True(u.Check("zed", bobPassword))
	is.True(u.Check("last", bobPassword)) // untouched: htpasswd's
	is.True(u.Check("alice", carolPassword))
	is.True(!u.Check("alice", alicePassword))
	entries, err := os.ReadDir(dir)
	is.NoErr(err)
	is.Equal(len(entries), 1) // no temporary file left

	// A new file, in a directory of its own, is 0600.
	fresh := filepath.Join(dir, "new", "users.txt")
	is.NoErr(os.Mkdir(filepath.Dir(fresh), 0o700))
	is.NoErr(AddUser(fresh, "alice", alicePassword, bcrypt.MinCost))
	fi, err := os.Stat(fresh)
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), fs.FileMode(0o600))
	b, err := os.ReadFile(fresh)
	is.NoErr(err)
	is.True(strings.HasPrefix(string(b), "alice:$2a$04$"))
	is.True(strings.HasSuffix(string(b), "\n"))
	is.Equal(strings.Count(string(b), "\n"), 1)

	// Through a symbolic link, the file it points to is written.
	link := filepath.Join(dir, "link.txt")
	is.NoErr(os.Symlink(fresh, link))
	is.NoErr(AddUser(link, "bob", bobPassword, bcrypt.MinCost))
	lfi, err := os.Lstat(link)
	is.NoErr(err)
	is.True(lfi.Mode()&fs.ModeSymlink != 0) // still a link
	u, err = LoadUsers(fresh, UsersOptions{})
	is.NoErr(err)
	is.Equal(u.Names(), []string{"alice", "bob"})
}

func TestAddUserRefused(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.txt")
	badText := "alice:$2y$04$hCwW91TWyaIKfdilrociduN331oO9kRMOpLWC4BS3sGPYLG30aQl.\nbob:$apr1$uK7jOusA$RNyHuHxo7hwYOtORwLYrF.\n"
	if err := os.WriteFile(bad, []byte(badText), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, user, password string
		want                       string
	}{
		{"short", filepath.Join(dir, "a.txt"), "alice", "elevenchars", "the password has 11 characters: want at least 12"},
		{"eleven characters in 22 bytes", filepath.Join(dir, "a.txt"), "alice", "ééééééééééé", "has 11 characters"},
		{"newline", filepath.Join(dir, "a.txt"), "alice", "twelve chars\nmore", "line break"},
		{"carriage return", filepath.Join(dir, "a.txt"), "alice", "twelve chars\r", "line break"},
		{"NUL", filepath.Join(dir, "a.txt"), "alice", "twelve chars\x00", "NUL"},
		{"too long for bcrypt", filepath.Join(dir, "a.txt"), "alice", strings.Repeat("x", 73), "has 73 bytes: bcrypt reads at most 72"},
		{"bad name", filepath.Join(dir, "a.txt"), "al:ice", alicePassword, `user name "al:ice": ':' is not allowed`},
		{"empty name", filepath.Join(dir, "a.txt"), "", alicePassword, "empty user name"},
		{"another user's line is bad", bad, "carol", carolPassword, "bad.txt line 2: user \"bob\": an htpasswd MD5"},
		{"no such directory", filepath.Join(dir, "none", "a.txt"), "alice", alicePassword, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			err := AddUser(tc.path, tc.user, tc.password, bcrypt.MinCost)
			is.True(err != nil)
			is.True(strings.Contains(err.Error(), tc.want)) // the error says why
			if tc.path != bad {
				_, err := os.Stat(tc.path)
				is.True(errors.Is(err, fs.ErrNotExist)) // not created
			}
		})
	}
	is := is.New(t)
	b, err := os.ReadFile(bad)
	is.NoErr(err)
	is.Equal(string(b), badText) // left as it was
	is.NoErr(ValidatePassword("éééééééééééé"))
}

func TestRemoveUser(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "users.txt")
	text := "# users\nalice:$2y$04$hCwW91TWyaIKfdilrociduN331oO9kRMOpLWC4BS3sGPYLG30aQl.\n\n# bob's\nbob:$2y$04$QyVgykAUFq/9wkQSY.wY2eVI1gjMnQQpknswcARQsFc1tlbYkl1Fq\n"
	is.NoErr(os.WriteFile(path, []byte(text), 0o644))
	read := func() string {
		b, err := os.ReadFile(path)
		is.NoErr(err)
		return string(b)
	}

	for _, tc := range []struct {
		user    string
		removed bool
		after   string
	}{
		{"carol", false, text},
		{"bob", true, "# users\nalice:$2y$04$hCwW91TWyaIKfdilrociduN331oO9kRMOpLWC4BS3sGPYLG30aQl.\n\n# bob's\n"},
		{"bob", false, "# users\nalice:$2y$04$hCwW91TWyaIKfdilrociduN331oO9kRMOpLWC4BS3sGPYLG30aQl.\n\n# bob's\n"},
		{"alice", true, "# users\n\n# bob's\n"},
	} {
		removed, err := RemoveUser(path, tc.user)
		is.NoErr(err)
		is.Equal(removed, tc.removed) // tc.user
		is.Equal(read(), tc.after)
	}
	fi, err := os.Stat(path)
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), fs.FileMode(0o644))
	u, err := LoadUsers(path, UsersOptions{})
	is.NoErr(err)
	is.Equal(len(u.Names()), 0)

	_, err = RemoveUser(filepath.Join(dir, "missing.txt"), "alice")
	is.True(errors.Is(err, fs.ErrNotExist))
	_, err = RemoveUser(path, "bad name")
	is.True(err != nil)

	// A duplicate goes with the rest of the user's lines.
	dup := "alice:$2y$04$hCwW91TWyaIKfdilrociduN331oO9kRMOpLWC4BS3sGPYLG30aQl.\nalice:$2y$04$QyVgykAUFq/9wkQSY.wY2eVI1gjMnQQpknswcARQsFc1tlbYkl1Fq\n"
	is.NoErr(os.WriteFile(path, []byte(dup), 0o600))
	_, err = LoadUsers(path, UsersOptions{})
	is.True(err != nil)
	removed, err := RemoveUser(path, "alice")
	is.NoErr(err)
	is.True(removed)
	is.Equal(read(), "")
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"Bob.Smith@example.org", true},
		{"a_b-c", true},
		{"x", true},
		{strings.Repeat("n", 64), true},
		{strings.Repeat("n", 65), false},
		{"", false},
		{"al ice", false},
		{"al:ice", false},
		{"élise", false},
		{"#alice", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is.New(t).Equal(ValidateName(tc.name) == nil, tc.ok)
		})
	}
}
