package logfile

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

func TestFile(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	l, err := New(path, nil)
	is.NoErr(err)
	defer l.Close()
	l.Write([]byte("one\n"))

	// logrotate: rename, then SIGUSR1
	is.NoErr(os.Rename(path, path+".1"))
	l.Write([]byte("two\n")) // still the old file until reopened
	is.NoErr(l.Reopen())
	l.Write([]byte("three\n"))
	is.NoErr(l.Flush())
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	is.Equal(string(old), "one\ntwo\n")
	is.Equal(string(cur), "three\n")

	var out bytes.Buffer
	l2, err := New("-", &out)
	is.NoErr(err)
	l2.Write([]byte("x\n"))
	is.Equal(out.String(), "") // buffered
	is.NoErr(l2.Flush())
	is.Equal(out.String(), "x\n")
	is.NoErr(l2.SetPath("")) // off
	is.True(!l2.Enabled())
	l2.Write([]byte("y\n"))
	is.Equal(out.String(), "x\n")

	is.True(l2.SetPath(filepath.Join(dir, "no", "such", "dir.log")) != nil) // error keeps the old destination
	is.Equal(l2.Path(), "")
}

func TestBuffered(t *testing.T) {
	is := is.New(t)
	var mu testutil.SyncBuffer
	b := NewBuffered(&mu)
	b.Write([]byte("one\n"))
	is.Equal(mu.String(), "") // not yet written
	deadline := time.Now().Add(10 * time.Second)
	for mu.String() == "" && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	is.Equal(mu.String(), "one\n") // written by the flusher
	b.Write([]byte("two\n"))
	is.NoErr(b.Close())
	is.Equal(mu.String(), "one\ntwo\n") // Close flushes the rest
}
