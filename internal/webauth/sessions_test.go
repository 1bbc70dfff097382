package webauth

import (
	"encoding/base64"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

func TestSessionsNew(t *testing.T) {
	is := is.New(t)
	clock := testutil.NewClock(t0)
	s := NewSessions(SessionsOptions{Now: clock.Now})
	seen := make(map[string]bool)
	for range 100 {
		sess := s.New("alice")
		for _, tok := range []string{sess.ID, sess.CSRF} {
			b, err := base64.RawURLEncoding.DecodeString(tok)
			is.NoErr(err)
			is.Equal(len(b), 32)
			is.True(!seen[tok]) // every token is new
			seen[tok] = true
		}
		is.Equal(sess.User, "alice")
		is.Equal(sess.Created, t0)
		is.Equal(sess.Expires, t0.Add(DefaultIdleTimeout))
		got, ok := s.Get(sess.ID)
		is.True(ok)
		is.Equal(got, sess)
	}
	is.Equal(s.Len(), 100)
}

func TestSessionsExpiry(t *testing.T) {
	const idle, maxAge = 30 * time.Minute, 2 * time.Hour
	type step struct {
		advance time.Duration
		ok      bool
		expires time.Duration // after t0, when ok
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"used within the idle timeout", []step{
			{29 * time.Minute, true, 59 * time.Minute},
			{29 * time.Minute, true, 88 * time.Minute},
		}},
		{"idle for the timeout", []step{
			{idle, false, 0},
		}},
		{"idle after use", []step{
			{10 * time.Minute, true, 40 * time.Minute},
			{idle - time.Nanosecond, true, 40*time.Minute + idle - time.Nanosecond},
			{idle, false, 0},
		}},
		{"used but too old", []step{
			{25 * time.Minute, true, 55 * time.Minute},
			{25 * time.Minute, true, 80 * time.Minute},
			{25 * time.Minute, true, 105 * time.Minute},
			{25 * time.Minute, true, maxAge}, // the absolute deadline comes first now
			{19 * time.Minute, true, maxAge},
			{time.Minute, false, 0},
		}},
		{"an expired session stays gone", []step{
			{idle, false, 0},
			{-idle, false, 0}, // a clock set back does not revive it
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			clock := testutil.NewClock(t0)
			s := NewSessions(SessionsOptions{Now: clock.Now, IdleTimeout: idle, MaxAge: maxAge})
			sess := s.New("alice")
			for _, st := range tc.steps {
				clock.Advance(st.advance)
				got, ok := s.Get(sess.ID)
				is.Equal(ok, st.ok)
				if ok {
					is.Equal(got.Expires, t0.Add(st.expires))
				} else {
					is.Equal(got, Session{})
				}
			}
		})
	}
}

func TestSessionsEviction(t *testing.T) {
	is := is.New(t)
	clock := testutil.NewClock(t0)
	s := NewSessions(SessionsOptions{Now: clock.Now, MaxSessions: 3, IdleTimeout: 10 * time.Minute})
	var ids []string
	for range 4 {
		ids = append(ids, s.New("u").ID)
		clock.Advance(time.Minute)
	}
	is.Equal(s.Len(), 3)
	_, ok := s.Get(ids[0])
	is.True(!ok) // the oldest went
	for _, id := range ids[1:] {
		_, ok := s.Get(id)
		is.True(ok)
	}

	// Expired sessions go before the oldest in force: the three were
	// used at 4m (until 14m); at 10m ids[1] is used again (until 20m); at
	// 15m ids[2] and ids[3] expired.
	clock.Advance(6 * time.Minute)
	_, ok = s.Get(ids[1])
	is.True(ok)
	clock.Advance(5 * time.Minute)
	a, b := s.New("v"), s.New("w")
	is.Equal(s.Len(), 3)
	for _, id := range []string{ids[1], a.ID, b.ID} {
		_, ok := s.Get(id)
		is.True(ok) // in force
	}

	// Deleted.
	s.Delete(a.ID)
	s.Delete(a.ID)
	s.Delete("no such session")
	_, ok = s.Get(a.ID)
	is.True(!ok)
	is.Equal(s.Len(), 2)
}

func TestSessionsSweep(t *testing.T) {
	is := is.New(t)
	clock := testutil.NewClock(t0)
	s := NewSessions(SessionsOptions{Now: clock.Now, IdleTimeout: time.Minute})
	for range 10 {
		s.New("u")
	}
	clock.Advance(sweepInterval)
	s.New("u") // a minute on: the expired ones are dropped
	is.Equal(s.Len(), 1)
}

func TestValidCSRF(t *testing.T) {
	clock := testutil.NewClock(t0)
	s := NewSessions(SessionsOptions{Now: clock.Now, IdleTimeout: time.Hour})
	old := s.New("dave")
	clock.Advance(30 * time.Minute)
	a, b := s.New("alice"), s.New("bob")
	gone := s.New("carol")
	s.Delete(gone.ID)
	clock.Advance(30 * time.Minute) // old expired, still kept
	is.New(t).Equal(s.Len(), 3)
	for _, tc := range []struct {
		name  string
		sess  Session
		token string
		want  bool
	}{
		{"its token", a, a.CSRF, true},
		{"another session's", a, b.CSRF, false},
		{"empty", a, "", false},
		{"a prefix", a, a.CSRF[:len(a.CSRF)-1], false},
		{"longer", a, a.CSRF + "x", false},
		{"the session ID", a, a.ID, false},
		{"a session that ended", gone, gone.CSRF, false},
		{"a session that expired", old, old.CSRF, false},
		{"a session forged with its own token", Session{ID: a.ID, CSRF: "x"}, "x", false},
		{"a session never made", Session{}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is.New(t).Equal(s.ValidCSRF(tc.sess, tc.token), tc.want)
		})
	}
}

func TestSessionsConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		check bool // no session is evicted: each is in force until deleted
		want  int  // sessions at the end
	}{
		{"room for all", 0, true, 8 * 100},
		{"evicting", 50, false, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSessions(SessionsOptions{MaxSessions: tc.max})
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 200 {
						sess := s.New(fmt.Sprintf("u%d", g))
						got, ok := s.Get(sess.ID)
						if tc.check && (!ok || !s.ValidCSRF(got, sess.CSRF)) {
							t.Errorf("session %d of %d: not in force (%v), or its CSRF token refused", i, g, ok)
						}
						if s.ValidCSRF(sess, sess.ID) {
							t.Errorf("session %d of %d: its ID taken as its CSRF token", i, g)
						}
						if i%2 == 0 {
							s.Delete(sess.ID)
						}
					}
				})
			}
			wg.Wait()
			is.New(t).Equal(s.Len(), tc.want)
		})
	}
}
