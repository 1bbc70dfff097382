package milter

import (
	"errors"
	"strings"
)

// Errors of parseAuthservID.
var (
	errNoAuthservID    = errors.New("authentication-results: no authserv-id")
	errUnterminated    = errors.New("authentication-results: unterminated comment or quoted-string")
	errAfterAuthserv   = errors.New("authentication-results: neither version nor \";\" after the authserv-id")
	errQuotedPairAtEnd = errors.New("authentication-results: quoted-pair at the end of the field")
)

// parseAuthservID reads the authserv-id at the start of an
// Authentication-Results field value (RFC 8601 §2.2):
//
//	authres-payload = [CFWS] authserv-id
//	                  [ CFWS authres-version ]
//	                  ( no-result / 1*resinfo ) [CFWS] CRLF
//	authserv-id     = value            ; RFC 2045: token / quoted-string
//	authres-version = 1*DIGIT [CFWS]
//
// with CFWS (RFC 5322 §3.2.2) made of white space, folding and comments
// that nest and hold quoted-pairs. It returns the id unquoted and the
// version ("" when absent). The id is returned even when what follows it
// is not ";" or the end (err then says so), and an unterminated
// quoted-string yields what it holds: a field that begins with our id
// must be removed whatever comes after it.
func parseAuthservID(v string) (id, version string, err error) {
	p := cfwsParser{s: v}
	if err := p.skipCFWS(); err != nil {
		return "", "", err
	}
	if p.done() {
		return "", "", errNoAuthservID
	}
	if p.peek() == '"' {
		id, err = p.quotedString()
		if err != nil {
			return id, "", err
		}
	} else {
		id = p.token()
		if id == "" {
			return "", "", errNoAuthservID
		}
	}
	// [ CFWS authres-version ]: CFWS is required before the digits.
	start := p.i
	if err := p.skipCFWS(); err != nil {
		return id, "", err
	}
	if p.i > start {
		version = p.digits()
		if version != "" {
			if err := p.skipCFWS(); err != nil {
				return id, version, err
			}
		}
	}
	if !p.done() && p.peek() != ';' {
		return id, version, errAfterAuthserv
	}
	return id, version, nil
}

// cfwsParser walks a header field value.
type cfwsParser struct {
	s string
	i int
}

func (p *cfwsParser) done() bool { return p.i >= len(p.s) }
func (p *cfwsParser) peek() byte { return p.s[p.i] }

// skipCFWS skips white space, line folding and comments.
func (p *cfwsParser) skipCFWS() error {
	for !p.done() {
		switch p.peek() {
		case ' ', '\t', '\r', '\n':
			p.i++
		case '(':
			if err := p.comment(); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return nil
}

// comment skips a comment: "(" *(ccontent / quoted-pair / FWS) ")",
// where ccontent may be a nested comment.
func (p *cfwsParser) comment() error {
	depth := 0
	for !p.done() {
		switch c := p.peek(); c {
		case '\\':
			if p.i+1 >= len(p.s) {
				return errQuotedPairAtEnd
			}
			p.i += 2
		case '(':
			depth++
			p.i++
		case ')':
			depth--
			p.i++
			if depth == 0 {
				return nil
			}
		default:
			p.i++
		}
	}
	return errUnterminated
}

// quotedString reads a quoted-string and returns its content with the
// quoted-pairs undone.
func (p *cfwsParser) quotedString() (string, error) {
	p.i++ // the opening quote
	var b strings.Builder
	for !p.done() {
		switch c := p.peek(); c {
		case '\\':
			if p.i+1 >= len(p.s) {
				return b.String(), errQuotedPairAtEnd
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case '"':
			p.i++
			return b.String(), nil
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return b.String(), errUnterminated
}

// token reads an RFC 2045 token: 1*<any US-ASCII CHAR except SPACE, CTLs
// or tspecials>.
func (p *cfwsParser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

// digits reads 1*DIGIT.
func (p *cfwsParser) digits() string {
	start := p.i
	for !p.done() && p.peek() >= '0' && p.peek() <= '9' {
		p.i++
	}
	return p.s[start:p.i]
}

// isTokenChar reports whether c may appear in an RFC 2045 token. Bytes of
// UTF-8 sequences count as token characters (RFC 8616 allows UTF-8 in
// Authentication-Results), so such an id is read whole.
func isTokenChar(c byte) bool {
	if c <= ' ' || c == 0x7f {
		return false
	}
	return !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}
