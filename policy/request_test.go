package policy

import (
	"bufio"
	"errors"
	"fmt"
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

// bufferSizes are the read buffers ReadRequest is tested with: bufio's
// least, the server's, and at and above the line limit.
var bufferSizes = []int{16, readBufferBytes, MaxLineBytes, 2 * MaxLineBytes}

// The limits and the values read do not depend on the reader's buffer: a
// line longer than the buffer is gathered.
func TestReadRequestLongLines(t *testing.T) {
	const head = "request=smtpd_access_policy\n"
	pad := func(n int) string { return strings.Repeat("a", n) }
	longRcpt := pad(5000) + "@domino.test"
	tests := []struct {
		name   string
		in     string
		reason string // "" accepted
		rcpt   string // of an accepted request
	}{
		{"line longer than the buffer", head + "recipient=" + longRcpt + "\n\n", "", longRcpt},
		{"line of MaxLineBytes, newline included", head + "recipient=" + pad(MaxLineBytes-11) + "\n\n", "", pad(MaxLineBytes - 11)},
		{"line of MaxLineBytes and CR LF", head + "recipient=" + pad(MaxLineBytes-12) + "\r\n\n", "", pad(MaxLineBytes - 12)},
		{"one byte over", head + "recipient=" + pad(MaxLineBytes-10) + "\n\n", ReasonLineTooLong, ""},
		{"far over", head + "recipient=" + pad(3*MaxLineBytes) + "\n\n", ReasonLineTooLong, ""},
		{"unended line of MaxLineBytes", head + "recipient=" + pad(MaxLineBytes-10), ReasonLineTooLong, ""},
		{"unended line under MaxLineBytes", head + "recipient=" + pad(MaxLineBytes-11), ReasonTruncated, ""},
		{"long first line", "request=" + pad(2000) + "\n\n", ReasonWrongRequest, ""},
		{"request over MaxRequestBytes in long lines", head + strings.Repeat("x="+pad(MaxLineBytes-3)+"\n", MaxRequestBytes/MaxLineBytes+1) + "\n", ReasonRequestTooLong, ""},
		{"NUL in a long line", head + "recipient=" + pad(3000) + "\x00\n\n", ReasonNUL, ""},
	}
	for _, tt := range tests {
		for _, size := range bufferSizes {
			t.Run(fmt.Sprintf("%s/buffer %d", tt.name, size), func(t *testing.T) {
				is := is.New(t)
				var req Request
				err := ReadRequest(bufio.NewReaderSize(strings.NewReader(tt.in), size), &req)
				if tt.reason != "" {
					is.True(errors.Is(err, ErrBadRequest))
					is.Equal(BadRequestReason(err), tt.reason)
					return
				}
				is.NoErr(err)
				is.Equal(req.Recipient, tt.rcpt)
				is.True(cap(req.long) <= keepLongBytes) // no large buffer kept between requests
			})
		}
	}
}

func TestBadRequestReason(t *testing.T) {
	is := is.New(t)
	var req Request
	err := ReadRequest(bufio.NewReader(strings.NewReader("request=spam\x01\n\n")), &req)
	is.Equal(BadRequestReason(err), ReasonWrongRequest)
	is.True(strings.Contains(err.Error(), `request="spam\x01" is not smtpd_access_policy`)) // the details go to the log
	is.Equal(BadRequestReason(fmt.Errorf("read: %w", err)), ReasonWrongRequest)             // wrapped
	is.Equal(BadRequestReason(io.EOF), "")
	is.Equal(BadRequestReason(nil), "")
}

func TestReadRequestAllocations(t *testing.T) {
	long := strings.Repeat("b", 3000) + "@domino.test" // gathered from several reads of the server's buffer
	for _, tt := range []struct {
		name      string
		recipient string
	}{
		{"short lines", "b@domino.test"},
		{"a line longer than the buffer", long},
	} {
		for _, size := range []int{readBufferBytes, MaxLineBytes} {
			t.Run(fmt.Sprintf("%s/buffer %d", tt.name, size), func(t *testing.T) {
				is := is.New(t)
				one := rcpt("192.0.2.1", "alloc.1", tt.recipient) + "\n\n"
				src := strings.NewReader("")
				r := bufio.NewReaderSize(src, size)
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
				is.Equal(req.Recipient, tt.recipient)
			})
		}
	}
}

// FuzzReadRequest feeds the parser arbitrary bytes: it must never panic,
// whatever it accepts is a well-formed request within the limits, every
// refusal has one of the fixed reasons, and a reader with bufio's least
// buffer (which gathers every line longer than 16 bytes) reads exactly
// what one with a buffer of MaxLineBytes does.
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
	f.Add([]byte("request=smtpd_access_policy\nrecipient=" + strings.Repeat("r", 100) + "@domino.test\r\n\n"))
	reasons := map[string]bool{ReasonLineTooLong: true, ReasonRequestTooLong: true, ReasonTooManyAttributes: true,
		ReasonNUL: true, ReasonNotNameValue: true, ReasonNoRequest: true, ReasonWrongRequest: true, ReasonTruncated: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		small := bufio.NewReaderSize(strings.NewReader(string(data)), 16)
		large := bufio.NewReaderSize(strings.NewReader(string(data)), MaxLineBytes)
		var sreq, lreq Request
		for i := range 100 {
			serr := ReadRequest(small, &sreq)
			err := ReadRequest(large, &lreq)
			if (serr == nil) != (err == nil) || BadRequestReason(serr) != BadRequestReason(err) ||
				!sameFields(&sreq, &lreq) {
				t.Fatalf("request %d: 16-byte buffer: %v %+v; %d-byte buffer: %v %+v", i, serr, sreq, MaxLineBytes, err, lreq)
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrBadRequest) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				if errors.Is(err, ErrBadRequest) && !reasons[BadRequestReason(err)] {
					t.Fatalf("unknown reason %q for %v", BadRequestReason(err), err)
				}
				return
			}
			if lreq.Request != "smtpd_access_policy" || lreq.Attributes < 1 || lreq.Attributes > MaxAttributes {
				t.Fatalf("accepted a bad request: %+v", lreq)
			}
		}
	})
}

// sameFields reports whether two requests hold the same values.
func sameFields(a, b *Request) bool {
	fa, fb := a.fields(), b.fields()
	for i := range fa {
		if *fa[i] != *fb[i] {
			return false
		}
	}
	return a.Attributes == b.Attributes
}
