package rules

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
)

// fakeGrey is a Greylister on a clock the test moves.
type fakeGrey struct {
	mu     sync.Mutex
	now    time.Time
	first  map[string]time.Time
	passed map[string]time.Duration
	nets   map[string]int
	keys   []string
	err    error
}

func newFakeGrey() *fakeGrey {
	return &fakeGrey{now: time.Unix(1_800_000_000, 0), first: map[string]time.Time{}, passed: map[string]time.Duration{}, nets: map[string]int{}}
}

func (f *fakeGrey) Greylist(_ context.Context, key string, delay, retry, keep time.Duration) (GreyAnswer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return GreyAnswer{}, f.err
	}
	f.keys = append(f.keys, key)
	if d, ok := f.passed[key]; ok {
		return GreyAnswer{Pass: true, Delayed: d}, nil
	}
	t0, ok := f.first[key]
	if !ok || f.now.Sub(t0) > retry {
		f.first[key] = f.now
		return GreyAnswer{New: true, Wait: delay}, nil
	}
	if waited := f.now.Sub(t0); waited >= delay {
		f.passed[key] = waited
		return GreyAnswer{Pass: true, FirstPass: true, Delayed: waited}, nil
	}
	return GreyAnswer{Wait: delay - f.now.Sub(t0)}, nil
}

func (f *fakeGrey) GreylistPassed(_ context.Context, network string, add int, _ time.Duration) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets[network] += add
	return f.nets[network], nil
}

func (f *fakeGrey) advance(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

const greyConfig = "[greylist]\nenabled = true\ndelay = \"1m\"\nauto_whitelist_after = 2\n"

// TestGreylist: the first attempt waits, a retry after delay passes with
// the X-Greylist header, the network is auto-whitelisted after passing
// auto_whitelist_after times; exemptions; a failing store lets mail in.
func TestGreylist(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("test.toml", greyConfig+"[whitelist]\nhosts = [\"192.0.2.99\"]\nscope = \"lists\"\n")
	is.NoErr(err)
	g := newFakeGrey()
	counters := new(Counters)
	e := NewEngine(cfg, EngineOptions{Greylist: g, Counters: counters})
	ctx := context.Background()
	msg := func(ip, from, rcpt string) (Verdict, *Session) {
		s := NewSession(netip.MustParseAddr(ip), "")
		e.Mail(ctx, s, from)
		return e.Rcpt(ctx, s, rcpt), s
	}

	v, _ := msg("192.0.2.7", "<Bob+News@Example.COM>", "x@domino.test")
	is.Equal(v.Reply(), "450 4.7.1 Greylisted, try again in 60 seconds")
	is.Equal(v.Control, ControlGreylist)
	is.Equal(g.keys[0], "192.0.2.0/24|bob@example.com|x@domino.test") // network, normalised sender, recipient
	g.advance(20 * time.Second)
	v, _ = msg("192.0.2.8", "bob@example.com", "x@domino.test") // same /24
	is.Equal(v.Reply(), "450 4.7.1 Greylisted, try again in 40 seconds")
	g.advance(41 * time.Second)
	v, s := msg("192.0.2.7", "bob@example.com", "x@domino.test")
	is.Equal(v.Action, ActionAccept)
	tags := e.Tags(s)
	is.Equal(len(tags), 1)
	is.Equal(tags[0].String(), "X-Greylist: delayed 61 seconds by smtp-interceptor")
	v, s = msg("192.0.2.7", "bob@example.com", "x@domino.test") // passed before: no delay, no header
	is.Equal(v.Action, ActionAccept)
	is.Equal(len(e.Tags(s)), 0)

	// IPv6 clients count by /64.
	msg("2001:db8:1:2::25", "bob@example.com", "x@domino.test")
	is.Equal(g.keys[len(g.keys)-1], "2001:db8:1:2::/64|bob@example.com|x@domino.test")

	// A second triplet of the network passes: it is auto-whitelisted.
	msg("192.0.2.7", "carol@example.com", "x@domino.test")
	g.advance(2 * time.Minute)
	msg("192.0.2.7", "carol@example.com", "x@domino.test")
	v, _ = msg("192.0.2.9", "dave@example.com", "y@domino.test")
	is.Equal(v.Action, ActionAccept) // auto-whitelisted: 2 passed
	st := counters.Snapshot().State
	is.Equal(st.GreylistPassed, uint64(2))
	is.Equal(st.GreylistDelayed, uint64(4))

	// Exempt: whitelisted (any scope), authenticated.
	n := len(g.keys)
	msg("192.0.2.99", "z@example.com", "x@domino.test")
	s = NewSession(netip.MustParseAddr("198.51.100.1"), "")
	s.AuthUser = "alice"
	e.Mail(ctx, s, "z@example.com")
	is.Equal(e.Rcpt(ctx, s, "x@domino.test").Action, ActionAccept)
	is.Equal(len(g.keys), n) // neither asked

	// A store that fails lets the recipient through.
	g.err = errors.New("state backend unavailable")
	v, _ = msg("203.0.113.5", "new@example.com", "x@domino.test")
	is.Equal(v.Action, ActionAccept)
	is.Equal(counters.Snapshot().State.GreylistErrors, uint64(1)) // and counted
}

// TestGreylistListed: with apply_to = "listed" only clients a list marked
// are greylisted.
func TestGreylistListed(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("test.toml", "[greylist]\nenabled = true\napply_to = \"listed\"\n[private_blacklist]\nenabled = true\nhosts = [\"192.0.2.66\"]\naction = \"greylist\"\n")
	is.NoErr(err)
	e := NewEngine(cfg, EngineOptions{Greylist: newFakeGrey()})
	ctx := context.Background()
	for _, tt := range []struct {
		ip   string
		want Action
	}{{"192.0.2.66", ActionTempfail}, {"192.0.2.1", ActionAccept}} {
		s := NewSession(netip.MustParseAddr(tt.ip), "")
		is.Equal(e.Connect(ctx, s).Action, ActionAccept) // the mark is not a refusal
		e.Mail(ctx, s, "a@example.com")
		is.Equal(e.Rcpt(ctx, s, "x@domino.test").Action, tt.want)
	}
}

func TestNormalizeSender(t *testing.T) {
	is := is.New(t)
	for _, tt := range []struct{ in, want string }{
		{"<Alice@Example.COM>", "alice@example.com"},
		{"alice+list@example.com", "alice@example.com"},
		{"prvs=1234abcd=alice@example.com", "alice@example.com"},
		{"btv1==0123456789==alice@example.com", "alice@example.com"},
		{"SRS0=HHH=TT=orig.example=alice@forwarder.example", "alice@orig.example"},
		{"SRS1=HHH=fwd.example==HHH=TT=orig.example=alice@fwd2.example", "alice@orig.example"},
		{"bounce-12345-678@lists.example", "bounce-#-#@lists.example"},
		{"<>", ""},
	} {
		is.Equal(NormalizeSender(tt.in), tt.want) // normalised
	}
}

func TestGreylistConfigErrors(t *testing.T) {
	for _, tt := range []struct{ name, toml, key, want string }{
		{"window shorter than delay", "[greylist]\ndelay = \"2h\"\nretry_window = \"1h\"", "greylist.retry_window", "not longer than delay"},
		{"bad apply_to", "[greylist]\napply_to = \"some\"", "greylist.apply_to", "all or listed"},
		{"greylist action without greylisting", "[dns_blacklist]\naction = \"greylist\"", "dns_blacklist.action", "[greylist] enabled"},
		{"bad net", "[greylist]\nnet_v6 = 8", "greylist.net_v6", "between 16 and 128"},
	} {
		t.Run(tt.name, func(t *testing.T) { oneConfigError(t, tt.toml, tt.key, 0, tt.want) })
	}
	cfg, err := Parse("test.toml", "[greylist]\nenabled = true\n[dns_blacklist]\naction = \"greylist\"")
	is.New(t).NoErr(err)
	is.New(t).True(strings.Contains(strings.Join(cfg.Warnings, "\n"), "changes nothing while [greylist] apply_to = \"all\""))
}
