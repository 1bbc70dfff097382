package console

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/admin"
	"github.com/smtp-interceptor/smtp-interceptor/internal/history"
	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/svgchart"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// feature is one control in the overview: on or off, and how.
type feature struct {
	Name, Detail string
	On           bool
}

// listSize is one list's number of entries.
type listSize struct {
	Key     string
	Entries int
	Unused  int
}

// overviewData is the overview page.
type overviewData struct {
	Version, Relay, Mode string
	Started              time.Time
	Uptime               string
	Config               string
	Features             []feature
	Lists                []listSize
	Sites                []siteView
	Backend              string
	BackendUp            bool
	Bans                 int
	Directory            *rules.DirectorySnapshot
	DirectoryURLs        string
	Health               Health
	StoreOn              bool
}

// siteView is a DNS list site with its counters and health.
type siteView struct {
	Kind                    rules.ListKind
	Site, Zone              string
	Suspended               bool
	Hits, Queries, Errors   uint64
	LastSuspended           time.Time
	Weight                  int
	Action, DecisionByScore string
}

func (c *Console) health() Health {
	if c.o.Health == nil {
		return Health{DNSResolverUp: true}
	}
	return c.o.Health()
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, q *request) {
	cfg := c.o.Engine.Config()
	snap := c.o.Engine.Counters().Snapshot()
	d := overviewData{Version: c.o.Version, Relay: c.o.Relay, Started: c.o.Started,
		Uptime: roundDuration(c.o.Now().Sub(c.o.Started)), Config: cfg.Path,
		Backend: c.o.Backend.Name(), BackendUp: c.o.Backend.Up(), Bans: len(c.o.Backend.Bans()),
		Directory: snap.Directory, DirectoryURLs: strings.Join(cfg.Directory.URLs, " "), Health: c.health(), StoreOn: c.o.Store != nil}
	d.Mode = "enforce"
	if cfg.Server.Shadow {
		d.Mode = "shadow"
	}
	if d.Config == "" {
		d.Config = "(built-in defaults)"
	}
	d.Features = features(cfg)
	sizes := map[string]*listSize{}
	var order []string
	for _, e := range cfg.EntryHits() {
		ls := sizes[e.Key]
		if ls == nil {
			ls = &listSize{Key: e.Key}
			sizes[e.Key] = ls
			order = append(order, e.Key)
		}
		ls.Entries++
		if e.Hits == 0 {
			ls.Unused++
		}
	}
	for _, k := range order {
		d.Lists = append(d.Lists, *sizes[k])
	}
	d.Sites = sites(cfg, snap)
	c.render(w, http.StatusOK, "overview", &page{Title: "Overview", User: q.User, CSRF: q.csrf(), Data: d})
}

// features says which controls the configuration turns on.
func features(cfg *rules.Config) []feature {
	onOff := func(name string, on bool, detail string) feature { return feature{Name: name, On: on, Detail: detail} }
	shadow := func(ctl rules.Control) string {
		if cfg.Shadowed(ctl) {
			return "shadow"
		}
		return ""
	}
	dnsbl := "first listing decides"
	if cfg.DNSBlacklist.Score {
		dnsbl = fmt.Sprintf("score, threshold %d", cfg.DNSBlacklist.Threshold)
	}
	grey := ""
	if cfg.Greylist.Enabled {
		grey = "delay " + cfg.Greylist.Delay.String()
		if cfg.Greylist.Listed {
			grey += ", listed clients only"
		}
	}
	return []feature{
		onOff("Private whitelist", cfg.Whitelist.Hosts.Len() > 0, fmt.Sprintf("%d entries", cfg.Whitelist.Hosts.Len())),
		onOff("Blacklist", cfg.Blacklist.Hosts.Len() > 0, strings.TrimSpace(fmt.Sprintf("%d entries %s", cfg.Blacklist.Hosts.Len(), shadow(rules.ControlBlacklist)))),
		onOff("Private blacklist", cfg.PrivateBlacklist.Enabled, strings.TrimSpace(cfg.PrivateBlacklist.Action.String()+" "+shadow(rules.ControlPrivateBlacklist))),
		onOff("DNS whitelists", cfg.DNSWhitelist.Enabled, fmt.Sprintf("%d sites, %s", len(cfg.DNSWhitelist.Sites), cfg.DNSWhitelist.Action)),
		onOff("DNS blacklists", cfg.DNSBlacklist.Enabled, strings.TrimSpace(fmt.Sprintf("%d sites, %s, %s %s", len(cfg.DNSBlacklist.Sites), cfg.DNSBlacklist.Action, dnsbl, shadow(rules.ControlDNSBlacklist)))),
		onOff("Verify host name", cfg.Connections.VerifyHostName, ""),
		onOff("HELO controls", cfg.Helo.RejectEmpty || cfg.Helo.Deny.Len() > 0, fmt.Sprintf("%d patterns", cfg.Helo.Deny.Len())),
		onOff("MAIL FROM controls", cfg.MailFrom.Deny.Len() > 0 || cfg.MailFrom.Allow.Len() > 0, ""),
		onOff("Recipient controls", cfg.Recipients.Max > 0 || cfg.Recipients.Deny.Len() > 0 || cfg.Recipients.Allow.Len() > 0, ""),
		onOff("Recipients verified in the directory", cfg.Recipients.Verify, strings.Join(cfg.Directory.URLs, " ")),
		onOff("SMTP command controls", len(cfg.Commands.Deny) > 0 || len(cfg.Commands.Allow) > 0, ""),
		onOff("Greylisting", cfg.Greylist.Enabled, grey),
		onOff("Rate limits", len(cfg.RateLimits) > 0, fmt.Sprintf("%d rules", len(cfg.RateLimits))),
		onOff("Automatic bans", cfg.Autoban.Enabled, fmt.Sprintf("%d refusals in %s", cfg.Autoban.Refusals, cfg.Autoban.Within)),
		onOff("Error limit", cfg.Server.ErrorLimit > 0, fmt.Sprintf("%d", cfg.Server.ErrorLimit)),
		onOff("Delay reject (milter)", cfg.Server.DelayReject, ""),
		onOff("Candidate configuration", cfg.Server.Candidate != "", cfg.Server.Candidate),
	}
}

// sites lists the configured DNS list sites with their counters.
func sites(cfg *rules.Config, snap rules.Snapshot) []siteView {
	counters := map[string]rules.SiteSnapshot{}
	for _, s := range snap.Sites {
		counters[string(s.Kind)+" "+s.Site] = s
	}
	zones := map[string]rules.ZoneSnapshot{}
	for _, z := range snap.Zones {
		zones[z.Zone] = z
	}
	var out []siteView
	add := func(kind rules.ListKind, list []rules.DNSSite, action string) {
		for _, s := range list {
			v := siteView{Kind: kind, Site: s.Name, Zone: s.Zone, Weight: s.Weight, Action: action}
			sc, ok := counters[string(kind)+" "+s.Zone]
			if !ok {
				sc = counters[string(kind)+" "+s.Name]
			}
			v.Hits, v.Queries, v.Errors = sc.Hits, sc.Queries, sc.Errors
			z := zones[s.Zone]
			v.Suspended, v.LastSuspended = z.Suspended, z.LastSuspended
			out = append(out, v)
		}
	}
	if cfg.DNSWhitelist.Enabled {
		add(rules.DNSWL, cfg.DNSWhitelist.Sites, cfg.DNSWhitelist.Action.String())
	}
	if cfg.DNSBlacklist.Enabled {
		add(rules.DNSBL, cfg.DNSBlacklist.Sites, cfg.DNSBlacklist.Action.String())
	}
	return out
}

// roundDuration prints d to the minute, with days: "3d 4h 12m".
func roundDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	d = d.Round(time.Minute)
	days, d := d/(24*time.Hour), d%(24*time.Hour)
	s := fmt.Sprintf("%dh %dm", d/time.Hour, (d%time.Hour)/time.Minute)
	if days > 0 {
		s = fmt.Sprintf("%dd ", days) + s
	}
	return s
}

// statsData is the statistics page.
type statsData struct {
	Charts []chartView
	Named  []metrics.NamedStat
	// HistoryOff says no per-minute history is kept.
	HistoryOff bool
}

type chartView struct {
	Title string
	SVG   any
}

// chartSeries is how many series a chart draws before summing the rest as
// "other".
const chartSeries = 6

func (c *Console) stats() metrics.Stats {
	if c.o.Stats != nil {
		return c.o.Stats()
	}
	cnt := c.o.Engine.Counters()
	return metrics.Stats{Snapshot: cnt.Snapshot(), Expanded: cnt.Expanded()}
}

func (c *Console) statsPage(w http.ResponseWriter, r *http.Request, q *request) {
	st := c.stats()
	d := statsData{Named: st.Named(false), HistoryOff: c.o.History == nil}
	if c.o.History != nil {
		d.Charts = charts(c.o.History.Minutes(), c.o.Now())
	}
	c.render(w, http.StatusOK, "stats", &page{Title: "Statistics", User: q.User, CSRF: q.csrf(), Data: d})
}

// charts draws the last 24 hours: refusals by control, DNS list hits by
// site, and request latency by protocol.
func charts(minutes []history.Minute, now time.Time) []chartView {
	start := now.Add(-24 * time.Hour).Truncate(time.Minute)
	if len(minutes) > 0 && minutes[0].Start.After(start) {
		start = minutes[0].Start
	}
	counted := func(title string, field func(history.Minute) map[string]uint64) chartView {
		keys := history.TopKeys(minutes, field, chartSeries)
		var series []svgchart.Series
		for _, k := range keys {
			series = append(series, svgchart.Series{Name: k, Points: make([]float64, len(minutes))})
		}
		other := svgchart.Series{Name: "other", Points: make([]float64, len(minutes))}
		hasOther := false
		for i, m := range minutes {
			for j := range series {
				if m.Gap {
					series[j].Points[i] = math.NaN()
					continue
				}
				series[j].Points[i] = float64(field(m)[keys[j]])
			}
			if m.Gap {
				other.Points[i] = math.NaN()
				continue
			}
			for k, v := range field(m) {
				if !slices.Contains(keys, k) {
					other.Points[i] += float64(v)
					hasOther = hasOther || v > 0
				}
			}
		}
		if hasOther {
			series = append(series, other)
		}
		ch := svgchart.Chart{Title: title, Unit: "per minute", Start: start, Step: time.Minute, Series: series}
		if len(minutes) > 0 {
			ch.Start = minutes[0].Start
		}
		return chartView{Title: title, SVG: ch.SVG()}
	}
	out := []chartView{
		counted("Refusals by control", func(m history.Minute) map[string]uint64 { return m.Refusals }),
		counted("DNS list hits by site", func(m history.Minute) map[string]uint64 { return m.DNSHits }),
	}
	var protocols []string
	for _, m := range minutes {
		for p := range m.Requests {
			if !slices.Contains(protocols, p) {
				protocols = append(protocols, p)
			}
		}
	}
	sort.Strings(protocols)
	var series []svgchart.Series
	for _, p := range protocols {
		for _, qn := range []string{"p50", "p95", "p99"} {
			s := svgchart.Series{Name: p + " " + qn, Points: make([]float64, len(minutes))}
			for i, m := range minutes {
				l, ok := m.Requests[p]
				if m.Gap || !ok || l.Count == 0 {
					s.Points[i] = math.NaN()
					continue
				}
				switch qn {
				case "p50":
					s.Points[i] = l.P50
				case "p95":
					s.Points[i] = l.P95
				default:
					s.Points[i] = l.P99
				}
			}
			series = append(series, s)
		}
	}
	lat := svgchart.Chart{Title: "Request latency", Unit: "s", Start: start, Step: time.Minute, Series: series}
	if len(minutes) > 0 {
		lat.Start = minutes[0].Start
	}
	return append(out, chartView{Title: "Request latency", SVG: lat.SVG()})
}

func (c *Console) apiStats(w http.ResponseWriter, r *http.Request, _ *request) {
	st := c.stats()
	writeJSON(w, http.StatusOK, map[string]any{"stats": st, "named": st.Named(false)})
}

// historyData is the history page.
type historyData struct {
	Off     bool
	Filter  historyForm
	Entries []historyRow
	Error   string
	Older   string
	Total   int
}

// historyForm is the filter form, as given.
type historyForm struct {
	IP, From, Rcpt, Control, Verdict, Since string
}

// historyRow is one session in the history table.
type historyRow struct {
	ID                int64
	Time              time.Time
	ClientIP, Client  string
	From              string
	Recipients        []string
	Refused           []string
	Verdict, Control  string
	Reply             string
	Refuses, Shadowed bool
}

// filterFrom reads the history filter from the query string. Since takes
// a duration ("24h", "7d") or an RFC 3339 time.
func filterFrom(v url.Values, now time.Time) (sessionstore.Filter, historyForm, error) {
	form := historyForm{IP: strings.TrimSpace(v.Get("ip")), From: strings.TrimSpace(v.Get("from")), Rcpt: strings.TrimSpace(v.Get("rcpt")),
		Control: strings.TrimSpace(v.Get("control")), Verdict: strings.TrimSpace(v.Get("verdict")), Since: strings.TrimSpace(v.Get("since"))}
	f := sessionstore.Filter{IP: form.IP, From: form.From, Rcpt: form.Rcpt, Control: form.Control, Verdict: form.Verdict}
	if form.Since != "" {
		t, err := parseSince(form.Since, now)
		if err != nil {
			return f, form, err
		}
		f.Since = t
	}
	if b := v.Get("before"); b != "" {
		id, err := strconv.ParseInt(b, 10, 64)
		if err != nil || id <= 0 {
			return f, form, fmt.Errorf("before: %q is not a session id", b)
		}
		f.Before = id
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return f, form, fmt.Errorf("limit: %q is not a positive number", l)
		}
		f.Limit = n
	}
	return f, form, nil
}

// parseSince reads "24h", "7d", "90m" or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := rules.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("since: %q is neither a duration (24h, 7d) nor an RFC 3339 time", s)
	}
	return now.Add(-d), nil
}

func (c *Console) historyPage(w http.ResponseWriter, r *http.Request, q *request) {
	p := &page{Title: "History", User: q.User, CSRF: q.csrf()}
	if c.o.Store == nil {
		p.Data = historyData{Off: true}
		c.render(w, http.StatusOK, "history", p)
		return
	}
	f, form, err := filterFrom(r.URL.Query(), c.o.Now())
	d := historyData{Filter: form}
	if err == nil {
		var pg sessionstore.Page
		pg, err = c.o.Store.Query(r.Context(), f)
		for _, e := range pg.Entries {
			d.Entries = append(d.Entries, row(e))
		}
		if pg.More && len(pg.Entries) > 0 {
			v := r.URL.Query()
			v.Set("before", strconv.FormatInt(pg.Entries[len(pg.Entries)-1].ID, 10))
			d.Older = "/history?" + v.Encode()
		}
	}
	status := http.StatusOK
	if err != nil {
		d.Error, status = err.Error(), http.StatusBadRequest
	}
	p.Data = d
	c.render(w, status, "history", p)
}

// row turns a stored session into a table row.
func row(e sessionstore.Entry) historyRow {
	rec := &e.Record
	h := historyRow{ID: e.ID, Time: rec.Time, ClientIP: rec.ClientIP, Client: rec.ClientName, Recipients: rec.Recipients,
		Refused: rec.Refused, Verdict: rec.Action.String(), Control: string(rec.Control), Refuses: rec.Action.Refuses()}
	if rec.MailFrom != nil {
		h.From = *rec.MailFrom
		if h.From == "" {
			h.From = "<>"
		}
	}
	if rec.Code != 0 {
		h.Reply = strings.TrimSpace(fmt.Sprintf("%d %s %s", rec.Code, rec.EnhancedCode, rec.Text))
	}
	if rec.WouldRefuse != nil {
		h.Shadowed = true
		h.Reply = fmt.Sprintf("shadow: would %d %s %s", rec.WouldRefuse.Code, rec.WouldRefuse.EnhancedCode, rec.WouldRefuse.Text)
	}
	return h
}

// sessionData is one session's page.
type sessionData struct {
	Row         historyRow
	Record      *rules.MessageRecord
	Trace       *rules.Explanation
	Differs     bool
	TraceResult string
}

func (c *Console) session(ctx context.Context, idText string) (sessionstore.Entry, int, error) {
	if c.o.Store == nil {
		return sessionstore.Entry{}, http.StatusNotFound, errors.New("the session store is off: set [log] store")
	}
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 {
		return sessionstore.Entry{}, http.StatusBadRequest, fmt.Errorf("%q is not a session id", idText)
	}
	e, err := c.o.Store.Get(ctx, id)
	switch {
	case errors.Is(err, sessionstore.ErrNotFound):
		return e, http.StatusNotFound, fmt.Errorf("no session %d (it may be older than [log] retention)", id)
	case err != nil:
		return e, http.StatusServiceUnavailable, err
	}
	return e, http.StatusOK, nil
}

func (c *Console) sessionPage(w http.ResponseWriter, r *http.Request, q *request) {
	e, status, err := c.session(r.Context(), r.PathValue("id"))
	if err != nil {
		c.render(w, status, "error", &page{Title: "Session", Nav: "history", User: q.User, CSRF: q.csrf(), Data: err.Error()})
		return
	}
	d := sessionData{Row: row(e), Record: &e.Record}
	if c.o.Trace != nil {
		x := c.o.Trace(r.Context(), &e.Record)
		d.Trace = &x
		d.TraceResult = describe(x.Final)
		d.Differs = x.Final.Action.Refuses() != e.Record.Action.Refuses() || x.Final.Action.Refuses() && x.Final.Control != e.Record.Control
	}
	c.render(w, http.StatusOK, "session", &page{Title: fmt.Sprintf("Session %d", e.ID), Nav: "history", User: q.User, CSRF: q.csrf(), Data: d})
}

func (c *Console) apiHistory(w http.ResponseWriter, r *http.Request, _ *request) {
	if c.o.Store == nil {
		writeJSONError(w, http.StatusNotFound, "the session store is off: set [log] store")
		return
	}
	f, _, err := filterFrom(r.URL.Query(), c.o.Now())
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	pg, err := c.o.Store.Query(r.Context(), f)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	type entry struct {
		ID int64 `json:"id"`
		rules.MessageRecord
	}
	out := struct {
		Sessions []entry `json:"sessions"`
		More     bool    `json:"more"`
	}{Sessions: []entry{}, More: pg.More}
	for _, e := range pg.Entries {
		out.Sessions = append(out.Sessions, entry{e.ID, e.Record})
	}
	writeJSON(w, http.StatusOK, out)
}

func (c *Console) apiSession(w http.ResponseWriter, r *http.Request, _ *request) {
	e, status, err := c.session(r.Context(), r.PathValue("id"))
	if err != nil {
		writeJSONError(w, status, err.Error())
		return
	}
	out := map[string]any{"id": e.ID, "record": e.Record}
	if c.o.Trace != nil {
		out["trace"] = c.o.Trace(r.Context(), &e.Record)
	}
	writeJSON(w, http.StatusOK, out)
}

// describe says what a verdict does, with its reply.
func describe(v rules.Verdict) string {
	s := v.Action.String()
	if v.Control != rules.ControlNone {
		s += " by " + string(v.Control)
	}
	if r := v.Reply(); r != "" {
		s += ": " + r
	}
	if v.Shadow {
		s += " (shadow: would refuse with " + v.ShadowReply() + ")"
	}
	return s
}

// bansData is the bans page.
type bansData struct {
	Bans    []banView
	Error   string
	Field   string
	Form    admin.BanRequest
	Backend string
	Up      bool
	Flash   string
}

type banView struct {
	state.Ban
	Expires string
}

func (c *Console) bans(q *request, d bansData) *page {
	for _, b := range c.o.Backend.Bans() {
		v := banView{Ban: b, Expires: "never"}
		if !b.Expires.IsZero() {
			v.Expires = b.Expires.Local().Format(time.RFC3339) + " (in " + roundDuration(b.Expires.Sub(c.o.Now())) + ")"
		}
		d.Bans = append(d.Bans, v)
	}
	d.Backend, d.Up = c.o.Backend.Name(), c.o.Backend.Up()
	return &page{Title: "Bans", User: q.User, CSRF: q.csrf(), Data: d}
}

func (c *Console) bansPage(w http.ResponseWriter, r *http.Request, q *request) {
	c.render(w, http.StatusOK, "bans", c.bans(q, bansData{Flash: r.URL.Query().Get("done")}))
}

func (c *Console) addBan(w http.ResponseWriter, r *http.Request, q *request) {
	req := admin.BanRequest{Prefix: r.PostFormValue("prefix"), For: r.PostFormValue("for"), Reason: r.PostFormValue("reason"), Creator: q.User + "@console"}
	b, err := req.Ban(c.o.Now(), c.o.Relay)
	if err == nil {
		err = c.o.Backend.AddBan(r.Context(), b)
	}
	if err != nil {
		d := bansData{Error: err.Error(), Form: req}
		var fe *admin.FieldError
		status := http.StatusServiceUnavailable
		if errors.As(err, &fe) {
			d.Field, status = fe.Field, http.StatusBadRequest
		}
		c.render(w, status, "bans", c.bans(q, d))
		return
	}
	expires := "never"
	if !b.Expires.IsZero() {
		expires = b.Expires.Format(time.RFC3339)
	}
	c.o.Logger.Info("ban added", "prefix", b.Prefix, "by", b.Creator, "reason", b.Reason, "expires", expires, "remote", r.RemoteAddr)
	http.Redirect(w, r, "/bans?done="+url.QueryEscape("banned "+b.Prefix.String()), http.StatusSeeOther)
}

func (c *Console) removeBan(w http.ResponseWriter, r *http.Request, q *request) {
	p, err := admin.ParsePrefix(r.PostFormValue("prefix"))
	if err != nil {
		c.render(w, http.StatusBadRequest, "bans", c.bans(q, bansData{Error: "prefix: " + err.Error()}))
		return
	}
	removed, err := c.o.Backend.RemoveBan(r.Context(), p)
	if err != nil {
		c.render(w, http.StatusServiceUnavailable, "bans", c.bans(q, bansData{Error: err.Error()}))
		return
	}
	if !removed {
		c.render(w, http.StatusNotFound, "bans", c.bans(q, bansData{Error: "no ban on " + p.String()}))
		return
	}
	c.o.Logger.Info("ban removed", "prefix", p, "by", q.User+"@console", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/bans?done="+url.QueryEscape("removed the ban on "+p.String()), http.StatusSeeOther)
}

// listsData is the lists page.
type listsData struct {
	Lists      []listView
	UnusedOnly bool
	Since      time.Time
}

type listView struct {
	Key     string
	Entries []entryView
	Unused  int
}

type entryView struct {
	Entry   string
	Hits    uint64
	LastHit time.Time
}

func (c *Console) listsPage(w http.ResponseWriter, r *http.Request, q *request) {
	d := listsData{UnusedOnly: r.URL.Query().Get("unused") != "", Since: c.o.Started}
	idx := map[string]int{}
	for _, e := range c.o.Engine.Config().EntryHits() {
		i, ok := idx[e.Key]
		if !ok {
			i = len(d.Lists)
			idx[e.Key] = i
			d.Lists = append(d.Lists, listView{Key: e.Key})
		}
		if e.Hits == 0 {
			d.Lists[i].Unused++
		} else if d.UnusedOnly {
			continue
		}
		d.Lists[i].Entries = append(d.Lists[i].Entries, entryView{Entry: e.Entry, Hits: e.Hits, LastHit: e.LastHit})
	}
	c.render(w, http.StatusOK, "lists", &page{Title: "Lists", User: q.User, CSRF: q.csrf(), Data: d})
}

// explainData is the explain page.
type explainData struct {
	Form   explainForm
	Error  string
	Result *rules.Explanation
	Final  string
}

type explainForm struct {
	IP, Name, Helo, From, Rcpts, Auth, Via string
	Asked                                  bool
}

// maxExplainRcpts bounds the recipients of one explain request.
const maxExplainRcpts = 100

func (c *Console) explainPage(w http.ResponseWriter, r *http.Request, q *request) {
	v := r.URL.Query()
	f := explainForm{IP: strings.TrimSpace(v.Get("ip")), Name: strings.TrimSpace(v.Get("name")), Helo: strings.TrimSpace(v.Get("helo")),
		From: strings.TrimSpace(v.Get("from")), Rcpts: v.Get("rcpt"), Auth: strings.TrimSpace(v.Get("auth")), Via: v.Get("via"), Asked: v.Has("ip")}
	if f.Via == "" {
		f.Via = string(rules.ViaPolicy)
	}
	d := explainData{Form: f}
	status := http.StatusOK
	if f.Asked {
		x, err := c.explain(r.Context(), f)
		if err != nil {
			d.Error, status = err.Error(), http.StatusBadRequest
		} else {
			d.Result, d.Final = &x, describe(x.Final)
		}
	}
	c.render(w, status, "explain", &page{Title: "Explain", User: q.User, CSRF: q.csrf(), Data: d})
}

// explain runs the form's session through Options.Explain.
func (c *Console) explain(ctx context.Context, f explainForm) (rules.Explanation, error) {
	ip, err := netip.ParseAddr(f.IP)
	if err != nil {
		return rules.Explanation{}, fmt.Errorf("IP: %q is not an IP address", f.IP)
	}
	if f.Via != string(rules.ViaPolicy) && f.Via != string(rules.ViaMilter) {
		return rules.Explanation{}, fmt.Errorf("via: %q: want policy or milter", f.Via)
	}
	rcpts := strings.FieldsFunc(f.Rcpts, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' || r == ' ' })
	if len(rcpts) > maxExplainRcpts {
		return rules.Explanation{}, fmt.Errorf("recipients: %d given, at most %d", len(rcpts), maxExplainRcpts)
	}
	if len(rcpts) > 0 && f.From == "" {
		return rules.Explanation{}, errors.New("recipients need a sender (MAIL FROM)")
	}
	if c.o.Explain == nil {
		return rules.Explanation{}, errors.New("explain is not available")
	}
	s := rules.NewSession(ip, f.Name)
	s.ID = "console-explain"
	tx := rules.Transaction{From: f.From, Rcpts: rcpts, AuthUser: f.Auth, Via: rules.Via(f.Via)}
	if f.Helo != "" {
		tx.HeloCmd, tx.Helo = "EHLO", f.Helo
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.o.Explain(ctx, s, tx), nil
}

func (c *Console) healthz(w http.ResponseWriter, r *http.Request, _ *request) {
	h := c.health()
	up := c.o.Backend.Up()
	status := "ok"
	if !up || !h.DNSResolverUp {
		status = "degraded"
	}
	out := map[string]any{"status": status, "version": c.o.Version, "relay": c.o.Relay,
		"uptime_seconds": int64(c.o.Now().Sub(c.o.Started) / time.Second), "state_backend": c.o.Backend.Name(), "state_backend_up": up,
		"dns_resolver_up": h.DNSResolverUp, "suspended_lists": c.o.Engine.Counters().SuspendedZones()}
	if h.Store != nil {
		out["session_store"] = h.Store
	}
	if d := c.o.Engine.Counters().Snapshot().Directory; d != nil {
		out["directory_up"] = d.Up
	}
	writeJSON(w, http.StatusOK, out)
}
