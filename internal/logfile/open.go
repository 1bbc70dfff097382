package logfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// accessW is access(2)'s W_OK: may the process write there.
const accessW = 0x2

// openPath opens a destination: nothing for "", stdout for "-", else the
// file for appending, created when missing.
func openPath(path string, stdout io.Writer) (io.Writer, *os.File, error) {
	switch path {
	case "":
		return nil, nil, nil
	case "-":
		return stdout, nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, f, nil
}

// CheckWritable reports whether a File could write to path, without
// creating or changing anything (for the check command): "" (off) and
// "-" (stdout) are fine; an existing path must be a regular file that
// opens for appending; a missing one needs an existing directory that
// the process may write to.
func CheckWritable(path string) error {
	if path == "" || path == "-" {
		return nil
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		switch {
		case fi.IsDir():
			return fmt.Errorf("log file %s: not a regular file (a directory); name a file in it", path)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("log file %s: not a regular file (%s); use \"-\" for standard output", path, describe(fi.Mode()))
		}
		// No O_CREATE: the file exists, and a check must not make one.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("log file %s cannot be opened for appending: %w", path, bare(err))
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("log file %s: %w", path, bare(err))
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return checkDir(path)
	default: // a parent that is a file (ENOTDIR), or one the process may not search
		return fmt.Errorf("log file %s: %w", path, bare(err))
	}
}

// checkDir checks that the missing file path can be created.
func checkDir(path string) error {
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("log file %s cannot be created: directory %s does not exist", path, dir)
	case err != nil:
		return fmt.Errorf("log file %s cannot be created: directory %s: %w", path, dir, bare(err))
	case !di.IsDir():
		return fmt.Errorf("log file %s cannot be created: %s is not a directory", path, dir)
	}
	if err := syscall.Access(dir, accessW); err != nil {
		return fmt.Errorf("log file %s cannot be created: directory %s is not writable: %w", path, dir, err)
	}
	return nil
}

// describe names a file type for an error message.
func describe(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeDevice != 0:
		return "a device"
	default:
		return "mode " + t.String()
	}
}
