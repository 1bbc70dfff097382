package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// banBucket is the bbolt bucket that holds the bans: key the prefix in
// text form, value the Ban in JSON.
var banBucket = []byte("bans")

// lockTimeout bounds the wait for the file lock that another process may
// hold.
const lockTimeout = time.Second

// banFile persists the bans of a Memory backend in a bbolt file.
type banFile struct {
	path string
	db   *bolt.DB
}

// openBanFile opens path and loads the bans in it, dropping those expired
// at now. A file that is locked by another process is an error. A file
// that cannot be read (corrupt, half-written, not a bbolt file) is logged,
// moved aside as path.corrupt-TIMESTAMP and replaced by an empty one.
func openBanFile(path string, now time.Time, log *slog.Logger) (*banFile, []Ban, error) {
	f, bans, err := tryOpenBanFile(path, now, log)
	if err == nil {
		return f, bans, nil
	}
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, nil, fmt.Errorf("state: ban file %s is locked by another process (is another instance running?): %w", path, err)
	}
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Path == path && pe.Op == "open" {
		// Permission problems are the administrator's to fix, not
		// corruption: moving the file aside would lose the bans.
		return nil, nil, fmt.Errorf("state: open ban file: %w", err)
	}
	aside := path + ".corrupt-" + now.UTC().Format("20060102T150405.000000000Z")
	log.Error("state file unreadable: moved aside, starting with no bans",
		"file", path, "moved_to", aside, "err", err)
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, nil, fmt.Errorf("state: move unreadable ban file %s aside: %w (it failed with: %v)", path, rerr, err)
	}
	f, bans, err = tryOpenBanFile(path, now, log)
	if err != nil {
		return nil, nil, fmt.Errorf("state: create ban file after moving the unreadable one aside: %w", err)
	}
	return f, bans, nil
}

// tryOpenBanFile opens and loads path. bbolt may panic on a corrupt file
// rather than return an error, or fault reading its memory map; both
// become an error here. Everything that reads the file before it is known
// good runs on this goroutine, where faults are panics (bbolt's own
// consistency check, tx.Check, runs on a goroutine of its own and so is
// not used).
func tryOpenBanFile(path string, now time.Time, log *slog.Logger) (f *banFile, bans []Ban, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var db *bolt.DB
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("state: ban file %s: bbolt panicked: %v", path, p)
			if db != nil {
				// Closing may panic as well; the file descriptor is
				// then leaked, once, at start-up.
				func() {
					defer func() { _ = recover() }()
					_ = db.Close()
				}()
			}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return nil, nil, fmt.Errorf("state: open ban file %s: %w", path, err)
	}
	// A file cut short (half-written, truncated copy) has pages that the
	// database references beyond its end: reading them would fault.
	err = db.View(func(tx *bolt.Tx) error {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if tx.Size() > fi.Size() {
			return fmt.Errorf("file truncated: %d bytes, the database needs %d", fi.Size(), tx.Size())
		}
		return nil
	})
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists(banBucket)
			if err != nil {
				return err
			}
			var drop [][]byte
			err = bk.ForEach(func(k, v []byte) error {
				var b Ban
				if err := json.Unmarshal(v, &b); err != nil || !b.Prefix.IsValid() {
					log.Error("state file: dropping unreadable ban", "file", path, "key", string(k), "err", err)
					drop = append(drop, k)
					return nil
				}
				if b.expired(now) {
					drop = append(drop, k)
					return nil
				}
				bans = append(bans, b)
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range drop {
				if err := bk.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		_ = db.Close()
		return nil, nil, fmt.Errorf("state: load ban file %s: %w", path, err)
	}
	return &banFile{path: path, db: db}, bans, nil
}

// put stores b.
func (f *banFile) put(b Ban) error {
	v, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("state: encode ban %s: %w", b.Prefix, err)
	}
	err = f.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(banBucket).Put([]byte(b.Prefix.String()), v)
	})
	if err != nil {
		return fmt.Errorf("state: save ban %s to %s: %w", b.Prefix, f.path, err)
	}
	return nil
}

// del removes the bans on ps.
func (f *banFile) del(ps ...netip.Prefix) error {
	if len(ps) == 0 {
		return nil
	}
	err := f.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(banBucket)
		for _, p := range ps {
			if err := bk.Delete([]byte(p.String())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete bans from %s: %w", f.path, err)
	}
	return nil
}

func (f *banFile) close() error {
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("state: close ban file %s: %w", f.path, err)
	}
	return nil
}
