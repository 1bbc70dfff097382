package webauth

import (
	"container/list"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// The defaults of SessionsOptions.
const (
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxAge      = 12 * time.Hour
	DefaultMaxSessions = 10000
)

// sweepInterval is how often New drops the sessions that expired, at
// most (and whenever the table is full).
const sweepInterval = time.Minute

// SessionsOptions configure Sessions.
type SessionsOptions struct {
	// Now is the clock of the expiries; nil means time.Now.
	Now func() time.Time
	// IdleTimeout ends a session not used for that long;
	// DefaultIdleTimeout when 0.
	IdleTimeout time.Duration
	// MaxAge ends a session that long after it began, used or not;
	// DefaultMaxAge when 0.
	MaxAge time.Duration
	// MaxSessions bounds the sessions kept: a new one beyond it ends the
	// oldest. DefaultMaxSessions when 0.
	MaxSessions int
}

// Session is one login to the web console.
type Session struct {
	// ID is the session cookie's value: 32 random bytes, base64url
	// without padding.
	ID string
	// User is who logged in.
	User string
	// CSRF is the token the session's forms and requests that change
	// something carry (32 random bytes, base64url); see ValidCSRF.
	CSRF string
	// Created is when the user logged in.
	Created time.Time
	// Expires is when the session ends unless it is used before: the
	// idle deadline, or MaxAge after Created when that comes first.
	Expires time.Time
}

// Sessions are the login sessions of the web console, in memory. Its
// methods are safe for concurrent use.
type Sessions struct {
	now     func() time.Time
	idle    time.Duration
	maxAge  time.Duration
	maxSize int

	mu    sync.Mutex
	byID  map[string]*list.Element // of *sessionEntry
	order *list.List               // oldest first
	swept time.Time
}

type sessionEntry struct {
	s        Session
	lastUsed time.Time
}

// NewSessions returns an empty session table.
func NewSessions(o SessionsOptions) *Sessions {
	s := &Sessions{now: o.Now, idle: o.IdleTimeout, maxAge: o.MaxAge, maxSize: o.MaxSessions,
		byID: make(map[string]*list.Element), order: list.New()}
	if s.now == nil {
		s.now = time.Now
	}
	if s.idle <= 0 {
		s.idle = DefaultIdleTimeout
	}
	if s.maxAge <= 0 {
		s.maxAge = DefaultMaxAge
	}
	if s.maxSize <= 0 {
		s.maxSize = DefaultMaxSessions
	}
	return s
}

// New begins a session for user, with a new random ID and CSRF token.
// When the table is full, the oldest session ends.
func (s *Sessions) New(user string) Session {
	now := s.now()
	e := &sessionEntry{s: Session{ID: randomToken(), User: user, CSRF: randomToken(), Created: now}, lastUsed: now}
	e.s.Expires = s.expires(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.maxSize || now.Sub(s.swept) >= sweepInterval {
		s.sweep(now)
	}
	for len(s.byID) >= s.maxSize {
		s.remove(s.order.Front())
	}
	s.byID[e.s.ID] = s.order.PushBack(e)
	return e.s
}

// Get returns the session id names and pushes its idle deadline back;
// false when there is none, or it expired.
func (s *Sessions) Get(id string) (Session, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.byID[id]
	if !ok {
		return Session{}, false
	}
	e := el.Value.(*sessionEntry)
	if s.expired(e, now) {
		s.remove(el)
		return Session{}, false
	}
	e.lastUsed = now
	e.s.Expires = s.expires(e)
	return e.s, true
}

// Delete ends the session id names (a logout); there may be none.
func (s *Sessions) Delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.byID[id]; ok {
		s.remove(el)
	}
}

// Len returns how many sessions are kept, expired ones not yet dropped
// included.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

// ValidCSRF reports whether token is the CSRF token of session sess,
// which must still be in force. The comparison takes the same time
// whatever the token's bytes are.
func (s *Sessions) ValidCSRF(sess Session, token string) bool {
	now := s.now()
	s.mu.Lock()
	var want string
	if el, ok := s.byID[sess.ID]; ok && !s.expired(el.Value.(*sessionEntry), now) {
		want = el.Value.(*sessionEntry).s.CSRF
	}
	s.mu.Unlock()
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1
}

// expires returns when e ends unless it is used before.
func (s *Sessions) expires(e *sessionEntry) time.Time {
	idle, abs := e.lastUsed.Add(s.idle), e.s.Created.Add(s.maxAge)
	if abs.Before(idle) {
		return abs
	}
	return idle
}

func (s *Sessions) expired(e *sessionEntry, now time.Time) bool {
	return !now.Before(s.expires(e))
}

// sweep drops the sessions that expired.
func (s *Sessions) sweep(now time.Time) {
	s.swept = now
	for el := s.order.Front(); el != nil; {
		next := el.Next()
		if s.expired(el.Value.(*sessionEntry), now) {
			s.remove(el)
		}
		el = next
	}
}

func (s *Sessions) remove(el *list.Element) {
	delete(s.byID, el.Value.(*sessionEntry).s.ID)
	s.order.Remove(el)
}

// randomToken returns 32 random bytes, base64url without padding.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails; it crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}
