// Package webauth is the login machinery of the web console: the users
// file of bcrypt hashes (Users, AddUser, RemoveUser), the login sessions
// (Sessions) and the limit on failed logins (Limiter).
package webauth

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Limits of the names and passwords of the users file.
const (
	// MinPassword is the shortest password AddUser takes, in characters.
	MinPassword = 12
	// MaxPassword is the longest password AddUser takes, in bytes: bcrypt
	// reads no further.
	MaxPassword = 72
	// MaxName is the longest user name, in bytes; a name is made of
	// ASCII letters, digits and . _ @ -.
	MaxName = 64
)

// ReloadInterval is how often Users looks at its file for a change, at
// most.
const ReloadInterval = time.Second

// newFileMode is the mode of a users file AddUser creates.
const newFileMode fs.FileMode = 0o600

// dummyHash is the hash an unknown user's password is compared with,
// so that a name that does not exist costs what one that does costs. It
// is the hash of a random password nobody kept, at bcrypt.DefaultCost;
// when the file's users have another cost, Users makes one at theirs.
const dummyHash = "$2a$10$odBUzsvaQPeLyzRM9g1WYewroSAaIyImfssuVEa.8Oze/h1pKf95."

// UsersOptions configure Users.
type UsersOptions struct {
	// Logger hears the file read again, and a changed file that cannot
	// be read (the users read before stay); nil discards.
	Logger *slog.Logger
	// Now is the clock of the checks for a change; nil means time.Now.
	Now func() time.Time
}

// Users are the users of the web console, read from a file of
// "name:bcrypt-hash" lines (what htpasswd -B -n prints), and read again
// when the file changes. Its methods are safe for concurrent use.
type Users struct {
	path string
	log  *slog.Logger
	now  func() time.Time
	// compare is bcrypt.CompareHashAndPassword; the tests count its calls.
	compare func(hash, password []byte) error

	mu      sync.Mutex
	set     userSet
	fi      fs.FileInfo // the file last read, good or bad
	statErr string      // the last failure to stat the file, logged once
	checked time.Time   // when the file was last looked at
}

// userSet is what one reading of the file found.
type userSet struct {
	hashes map[string][]byte
	// dummy is compared with for an unknown name, at the cost most of
	// the hashes have.
	dummy []byte
}

// LoadUsers reads the users file at path. An error names the file and
// the line; a missing file is an error.
func LoadUsers(path string, opts UsersOptions) (*Users, error) {
	set, fi, err := readUsers(path)
	if err != nil {
		return nil, err
	}
	u := &Users{
		path: path, log: opts.Logger, now: opts.Now,
		compare: bcrypt.CompareHashAndPassword,
		set:     set, fi: fi,
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	if u.now == nil {
		u.now = time.Now
	}
	u.checked = u.now()
	return u, nil
}

// Check reports whether password is name's. An unknown name costs the
// same bcrypt comparison as a known one, so that the time an answer takes
// does not tell which names exist. A change of the file applies within
// ReloadInterval.
func (u *Users) Check(name, password string) bool {
	set := u.current()
	hash, ok := set.hashes[name]
	if !ok {
		hash = set.dummy
	}
	err := u.compare(hash, []byte(password))
	return ok && err == nil
}

// Names returns the names of the users, sorted.
func (u *Users) Names() []string {
	set := u.current()
	names := make([]string, 0, len(set.hashes))
	for n := range set.hashes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// current returns the users in force, having read the file again if it
// changed since it was last looked at, at most once every ReloadInterval.
// A changed file that cannot be read leaves the users read before, with a
// warning; it is read again when it changes again.
func (u *Users) current() userSet {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	if d := now.Sub(u.checked); d >= 0 && d < ReloadInterval {
		return u.set
	}
	u.checked = now
	fi, err := os.Stat(u.path)
	if err != nil {
		if msg := err.Error(); msg != u.statErr {
			u.statErr = msg
			u.log.Warn("users file: cannot read it; the users read before stay", "path", u.path, "users", len(u.set.hashes), "err", err)
		}
		return u.set
	}
	u.statErr = ""
	if sameFile(u.fi, fi) {
		return u.set
	}
	set, readFi, err := readUsers(u.path)
	if err != nil {
		u.fi = fi // not read again until it changes again
		u.log.Warn("users file changed and is bad; the users read before stay", "path", u.path, "users", len(u.set.hashes), "err", err)
		return u.set
	}
	u.set, u.fi = set, readFi
	u.log.Info("users file read again", "path", u.path, "users", len(set.hashes))
	return u.set
}

// sameFile reports whether b is the file a was: the same inode, size and
// modification time.
func sameFile(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// readUsers reads and parses the users file, and returns what it
// describes the file as it was read.
func readUsers(path string) (userSet, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return userSet{}, nil, fmt.Errorf("users file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return userSet{}, nil, fmt.Errorf("users file: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return userSet{}, nil, fmt.Errorf("users file: read %s: %w", path, err)
	}
	hashes, err := parseUsers(path, data, "")
	if err != nil {
		return userSet{}, nil, err
	}
	return userSet{hashes: hashes, dummy: dummyFor(hashes)}, fi, nil
}

// parseUsers parses the lines of a users file; file names it in errors,
// which say every bad line. The lines of the user skip are left out
// (AddUser and RemoveUser replace them); "" leaves out none.
func parseUsers(file string, data []byte, skip string) (map[string][]byte, error) {
	hashes := make(map[string][]byte)
	seen := make(map[string]int) // name → line
	var errs []error
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if skip != "" && name == skip {
			continue
		}
		var err error
		if !ok {
			err = errors.New(`want name:bcrypt-hash, found no ":"`)
		} else if err = ValidateName(name); err == nil {
			if first := seen[name]; first != 0 {
				err = fmt.Errorf("user %q again (first on line %d)", name, first)
			} else if herr := checkHash(hash); herr != nil {
				err = fmt.Errorf("user %q: %w", name, herr)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %w", file, n, err))
			continue
		}
		seen[name] = n
		hashes[name] = []byte(hash)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return hashes, nil
}

// checkHash says what is wrong with a hash of the users file: it must be
// bcrypt's, of version $2a$, $2b$ or $2y$ (htpasswd -B writes $2y$;
// golang.org/x/crypto/bcrypt compares all three, which differ only for
// passwords longer than bcrypt reads), with a cost of 04 to 31.
func checkHash(h string) error {
	const how = "make one with smtp-interceptor admin-user add or htpasswd -B"
	switch {
	case strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"), strings.HasPrefix(h, "$2y$"):
	case strings.HasPrefix(h, "$2x$"):
		// x/crypto/bcrypt would compare it as $2a$, which it is not.
		return errors.New("a $2x$ hash (crypt_blowfish's 8-bit bug) is not supported: " + how)
	case strings.HasPrefix(h, "$apr1$"):
		return errors.New("an htpasswd MD5 ($apr1$) hash, not bcrypt: " + how)
	case strings.HasPrefix(h, "{SHA}"):
		return errors.New("an htpasswd SHA-1 ({SHA}) hash, not bcrypt: " + how)
	case h == "":
		return errors.New("no hash: " + how)
	default:
		return errors.New("not a bcrypt hash ($2a$, $2b$ or $2y$): " + how)
	}
	if len(h) != 60 {
		return fmt.Errorf("a bcrypt hash is 60 characters, this one %d", len(h))
	}
	c := h[4:7]
	if c[0] < '0' || c[0] > '9' || c[1] < '0' || c[1] > '9' || c[2] != '$' {
		return fmt.Errorf("bad cost %q: want two digits and $", c)
	}
	if cost := int(c[0]-'0')*10 + int(c[1]-'0'); cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return fmt.Errorf("cost %d out of range: want %d to %d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	for _, r := range h[7:] {
		if !strings.ContainsRune("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", r) {
			return fmt.Errorf("%q is not a character of bcrypt's salt and hash", r)
		}
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return err
	}
	return nil
}

// dummyFor returns the hash to compare an unknown name's password with:
// one at the cost most of hashes have (the higher on a tie).
func dummyFor(hashes map[string][]byte) []byte {
	count := make(map[int]int)
	for _, h := range hashes {
		c, err := bcrypt.Cost(h)
		if err == nil {
			count[c]++
		}
	}
	best, most := bcrypt.DefaultCost, 0
	for c, n := range count {
		if n > most || n == most && c > best {
			best, most = c, n
		}
	}
	if best == bcrypt.DefaultCost {
		return []byte(dummyHash)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), best)
	if err != nil {
		return []byte(dummyHash)
	}
	return h
}

// ValidateName says what is wrong with a user name: it is 1 to MaxName
// bytes of ASCII letters, digits and . _ @ -.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("empty user name")
	}
	if len(name) > MaxName {
		return fmt.Errorf("user name %.20q... is %d bytes: at most %d", name, len(name), MaxName)
	}
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', strings.ContainsRune("._@-", r):
		default:
			return fmt.Errorf("user name %q: %q is not allowed (letters, digits and . _ @ - are)", name, r)
		}
	}
	return nil
}

// ValidatePassword says what is wrong with a new password: it has at
// least MinPassword characters, at most MaxPassword bytes, and no line
// break or NUL (the line-oriented ways of giving it, and C's bcrypt,
// would cut it there).
func ValidatePassword(password string) error {
	switch n := utf8.RuneCountInString(password); {
	case n < MinPassword:
		return fmt.Errorf("the password has %d characters: want at least %d", n, MinPassword)
	case len(password) > MaxPassword:
		return fmt.Errorf("the password has %d bytes: bcrypt reads at most %d", len(password), MaxPassword)
	case strings.ContainsAny(password, "\n\r"):
		return errors.New("the password has a line break")
	case strings.ContainsRune(password, 0):
		return errors.New("the password has a NUL character")
	}
	return nil
}

// AddUser sets name's password in the users file at path: it replaces
// the user's line, or adds one, and keeps every other line and comment.
// cost is bcrypt's (bcrypt.DefaultCost below bcrypt.MinCost). The file is
// created (mode 0600) when it does not exist; else it is replaced
// atomically (a file written next to it, then renamed over it) with its
// mode and owner. A file with bad lines other than the user's is left as
// it is, with the error.
func AddUser(path, name, password string, cost int) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := ValidatePassword(password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return fmt.Errorf("hash the password of %q: %w", name, err)
	}
	_, err = editUsers(path, name, name+":"+string(hash))
	return err
}

// RemoveUser removes name's line from the users file at path, as AddUser
// writes it, and reports whether there was one. A missing file is an
// error.
func RemoveUser(path, name string) (bool, error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	return editUsers(path, name, "")
}

// editUsers replaces name's lines in the users file with line, or removes
// them when line is "", and reports whether there were any.
func editUsers(path, name, line string) (found bool, err error) {
	target, mode := path, newFileMode
	var owner *syscall.Stat_t
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		// Write the file a symbolic link points to, not over the link.
		if real, err := filepath.EvalSymlinks(path); err == nil {
			target = real
		}
		fi, err := os.Stat(target)
		if err != nil {
			return false, fmt.Errorf("users file: %w", err)
		}
		mode = fi.Mode().Perm()
		owner, _ = fi.Sys().(*syscall.Stat_t)
	case errors.Is(err, fs.ErrNotExist) && line != "":
		data = nil
	default:
		return false, fmt.Errorf("users file: %w", err)
	}
	if _, err := parseUsers(path, data, name); err != nil {
		return false, fmt.Errorf("%w\n%s is left as it is: fix it first", err, path)
	}

	var out bytes.Buffer
	put := func(l string) {
		out.WriteString(l)
		out.WriteByte('\n')
	}
	rest := string(data)
	for rest != "" {
		var l string
		l, rest, _ = strings.Cut(rest, "\n")
		if n, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && n == name {
			if !found && line != "" {
				put(line)
			}
			found = true
			continue
		}
		put(l)
	}
	switch {
	case !found && line == "":
		return false, nil
	case !found:
		put(line)
	}
	if err := writeAtomic(target, out.Bytes(), mode, owner); err != nil {
		return found, err
	}
	return found, nil
}

// writeAtomic replaces the file at path with data: it writes a file in
// the same directory and renames it over path, so that a reader sees the
// old file or the new one, never a part. The new file has mode and, when
// owner is set, its owner and group.
func writeAtomic(path string, data []byte, mode fs.FileMode, owner *syscall.Stat_t) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("users file: write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if owner != nil {
		if err := keepOwner(f, owner); err != nil {
			return fmt.Errorf("users file: keep the owner of %s (%d:%d): %w", path, owner.Uid, owner.Gid, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("users file: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("users file: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if d, err := os.Open(dir); err == nil { // the rename made durable
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// keepOwner gives f the owner and group of the file it replaces, when
// they differ from its own (root replacing a file of the service's).
func keepOwner(f *os.File, owner *syscall.Stat_t) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == owner.Uid && st.Gid == owner.Gid {
		return nil
	}
	return f.Chown(int(owner.Uid), int(owner.Gid))
}
