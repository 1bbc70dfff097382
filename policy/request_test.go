package policy

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestReadRequest(t *testing.T) {
	is := is.New(t)
	in := "request=smtpd_access_policy\r\nprotocol_state=RCPT\nclient_address=192.0.2.1\nsender=a@b=c\nx=\n\n" +
		"\nrequest=smtpd_access_policy\nprotocol_state=DATA\n\n"
	r := bufio.NewReaderSize(strings.NewReader(in), MaxLineBytes)
	var req Request
	is.NoErr(ReadRequest(r, &req))
	is.Equal(req.ProtocolState, "RCPT")
	is.Equal(req.ClientAddress, "192.0.2.1")
	is.Equal(req.Sender, "a@b=c") // only the first = splits
	is.Equal(req.Attributes, 5)
	is.NoErr(ReadRequest(r, &req)) // the stray empty line between requests is skipped
	is.Equal(req.ProtocolState, "DATA")
	is.Equal(req.ClientAddress, "") // not repeated: cleared
	is.Equal(req.Sender, "")
	is.Equal(ReadRequest(r, &req), io.EOF) // clean end between requests
}

func TestReadRequestAllocations(t *testing.T) {
	is := is.New(t)
	one := rcpt("192.0.2.1", "alloc.1", "b@domino.test") + "\n\n"
	src := strings.NewReader("")
	r := bufio.NewReaderSize(src, MaxLineBytes)
	var req Request
	src.Reset(one)
	is.NoErr(ReadRequest(r, &req))
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(one)
		r.Reset(src)
		if err := ReadRequest(r, &req); err != nil {
			t.Fatal(err)
		}
	})
	is.Equal(allocs, 0.0) // repeated values reuse the previous strings
}

// FuzzReadRequest feeds the parser arbitrary bytes: it must never panic,
// and whatever it accepts is a well-formed request within the limits.
func FuzzReadRequest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "policy", "*.txt"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\n\n"))
	f.Add([]byte("\x00\xff=\n\n"))
	f.Add([]byte("=\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(strings.NewReader(string(data)), MaxLineBytes)
		var req Request
		for range 100 {
			err := ReadRequest(r, &req)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrBadRequest) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if req.Request != "smtpd_access_policy" || req.Attributes < 1 || req.Attributes > MaxAttributes {
				t.Fatalf("accepted a bad request: %+v", req)
			}
		}
	})
}
