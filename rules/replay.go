package rules

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// ReplayChange is how one recorded session would be decided differently.
type ReplayChange struct {
	Session  string `json:"session"`
	ClientIP string `json:"client_ip"`
	// Was and Now say the decision, e.g. "accept" or "reject by helo".
	Was, Now string
	// Control and Entry are what decides now (or decided, when the new
	// configuration accepts); Entry is the list entry when one matched.
	Control Control `json:"control"`
	Entry   string  `json:"entry,omitempty"`
	Reply   string  `json:"reply,omitempty"`
}

// ReplayGroup counts the changes with one control and entry and keeps a
// few examples.
type ReplayGroup struct {
	Control  Control        `json:"control"`
	Entry    string         `json:"entry,omitempty"`
	Change   string         `json:"change"` // e.g. "accept → reject"
	Count    int            `json:"count"`
	Examples []ReplayChange `json:"examples"`
}

// ReplayReport is the result of deciding recorded sessions again.
type ReplayReport struct {
	Sessions int           `json:"sessions"`
	Changed  int           `json:"changed"`
	Groups   []ReplayGroup `json:"groups"`
}

// replayExamples is how many examples a group keeps.
const replayExamples = 3

// Replay decides every recorded session again under cfg, with the DNS
// list answers the record holds (a list that listed the client then lists
// it now; every other list, including one the record never asked, does
// not), and reports the sessions whose verdict changes: from accept to a
// refusal or back, or to a refusal by another control. verify_host_name
// and verify_domain get no DNS here: they answer as if the names existed,
// since the record does not hold those answers. [recipients] verify asks
// dir, the live directory (read-only lookups, through its cache); with dir
// nil every recipient is taken to exist.
func Replay(ctx context.Context, cfg *Config, records []MessageRecord, dir Directory) ReplayReport {
	if dir == nil {
		dir = everyoneExists{}
	}
	var rep ReplayReport
	groups := map[string]*ReplayGroup{}
	for i := range records {
		r := &records[i]
		rep.Sessions++
		now, v := replayOne(ctx, cfg, r, dir)
		was := recordedDecision(r)
		if was == now {
			continue
		}
		rep.Changed++
		c := ReplayChange{Session: r.Session, ClientIP: r.ClientIP, Was: was, Now: now, Control: v.Control, Entry: entryOf(v.Reason), Reply: v.Reply()}
		if !v.Action.Refuses() {
			c.Control, c.Entry = r.Control, entryOf(r.Reason)
		}
		change := verb(was) + " → " + verb(now)
		key := change + "\x00" + string(c.Control) + "\x00" + c.Entry
		g := groups[key]
		if g == nil {
			g = &ReplayGroup{Control: c.Control, Entry: c.Entry, Change: change}
			groups[key] = g
		}
		g.Count++
		if len(g.Examples) < replayExamples {
			g.Examples = append(g.Examples, c)
		}
	}
	for _, g := range groups {
		rep.Groups = append(rep.Groups, *g)
	}
	sort.Slice(rep.Groups, func(i, j int) bool {
		a, b := rep.Groups[i], rep.Groups[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Change+string(a.Control)+a.Entry < b.Change+string(b.Control)+b.Entry
	})
	return rep
}

// replayOne runs one record through an engine on cfg and returns the
// decision and the deciding verdict.
func replayOne(ctx context.Context, cfg *Config, r *MessageRecord, dir Directory) (string, Verdict) {
	x := ExplainRecord(ctx, cfg, r, dir)
	return decision(x.Final), x.Final
}

// ExplainRecord decides one recorded session again under cfg with tracing
// on, as Replay does (the record's DNS list answers, bans, rate limits and
// greylisting as recorded; dir nil takes every recipient to exist), and
// returns every stage's verdict and trace: what explain shows for it.
func ExplainRecord(ctx context.Context, cfg *Config, r *MessageRecord, dir Directory) Explanation {
	if dir == nil {
		dir = everyoneExists{}
	}
	dns := &replayDNS{MemoryDNS: NewMemoryDNS()}
	ip, ipErr := ParseClientIP(r.ClientIP)
	for _, l := range r.DNSLists {
		if site, err := ParseDNSSite(Entry{Value: l.Site}); err == nil && ipErr == nil {
			dns.Set(site.Zone, ip, l.TXT, l.Answers...)
		}
	}
	// Bans, rate limits and greylisting are state, not configuration: a
	// session one of them refused is replayed as refused by it again,
	// every other as neither banned, limited nor greylisted.
	opts := EngineOptions{DNS: dns, Directory: dir}
	switch r.Control {
	case ControlBans:
		if ipErr == nil {
			p, _ := ip.Prefix(ip.BitLen())
			opts.Bans = replayBans{Ban{Prefix: p, Reason: "as recorded: " + r.Reason, Creator: "replay"}}
		}
	case ControlRateLimit:
		opts.Limiter = replayLimiter{}
	case ControlGreylist:
		opts.Greylist = replayGrey{}
	}
	e := NewEngine(cfg, opts)
	s := NewSession(ip, r.ClientName)
	if r.ClientPTR != "" {
		s.SetPTR(r.ClientPTR)
	}
	s.ID = r.Session
	tx := Transaction{AuthUser: r.AuthUser}
	if r.Helo != "" {
		tx.HeloCmd, tx.Helo = "EHLO", r.Helo
	}
	if r.MailFrom != nil {
		tx.From = *r.MailFrom
		if tx.From == "" {
			tx.From = "<>"
		}
		tx.Rcpts = append(append([]string(nil), r.Recipients...), r.Refused...)
	}
	return e.Explain(ctx, s, tx)
}

// everyoneExists is the directory of a replay without one: every address
// is one person.
type everyoneExists struct{}

func (everyoneExists) LookupRecipient(_ context.Context, addr string) (DirectoryAnswer, error) {
	return DirectoryAnswer{Query: "(replay: no directory asked)", Entries: []DirectoryEntry{{DN: addr}}}, nil
}

// replayBans bans the one client a recorded session was refused by a ban.
type replayBans struct{ ban Ban }

func (b replayBans) Banned(ip netip.Addr) (Ban, bool) { return b.ban, b.ban.Prefix.Contains(ip) }

// replayLimiter is over every limit: the recorded session was refused by
// one.
type replayLimiter struct{}

func (replayLimiter) Allow(context.Context, string, int, time.Duration, int) (RateDecision, error) {
	return RateDecision{RetryAfter: time.Minute}, nil
}

// replayGrey has every triplet wait: the recorded session was
// greylisted.
type replayGrey struct{}

func (replayGrey) Greylist(_ context.Context, _ string, delay, _, _ time.Duration) (GreyAnswer, error) {
	return GreyAnswer{New: true, Wait: delay}, nil
}

func (replayGrey) GreylistPassed(context.Context, string, int, time.Duration) (int, error) {
	return 0, nil
}

// replayDNS answers the DNS lists from the record and every host and
// domain question with "it exists".
type replayDNS struct{ *MemoryDNS }

func (replayDNS) ReverseNames(context.Context, netip.Addr) ([]string, error) {
	return []string{"recorded.invalid"}, nil
}
func (replayDNS) DomainExists(context.Context, string) (bool, error) { return true, nil }

// decision names what a verdict does to the client: "accept" (tags and
// shadowed refusals included) or "reject by helo", "tempfail by
// recipients".
func decision(v Verdict) string {
	if !v.Action.Refuses() {
		return "accept"
	}
	return v.Action.String() + " by " + string(v.Control)
}

// recordedDecision is decision for a record.
func recordedDecision(r *MessageRecord) string {
	return decision(Verdict{Action: r.Action, Control: r.Control})
}

// verb is the action part of a decision.
func verb(d string) string {
	v, _, _ := strings.Cut(d, " ")
	return v
}

// entryOf finds the list entry in a reason: its last quoted text
// (`blacklist entry "192.0.2.0/24"`); "" when there is none.
func entryOf(reason string) string {
	end := strings.LastIndexByte(reason, '"')
	if end <= 0 {
		return ""
	}
	start := strings.LastIndexByte(reason[:end], '"')
	if start < 0 {
		return ""
	}
	return reason[start+1 : end]
}
