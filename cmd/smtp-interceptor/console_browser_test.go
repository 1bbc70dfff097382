package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/matryer/is"
	"golang.org/x/crypto/bcrypt"

	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/webauth"
)

// screenshotsEnv names a directory the browser test also writes its
// screenshots to (docs/screenshots is made with it); they always go to a
// temporary directory too.
const screenshotsEnv = "SMTPI_SCREENSHOTS"

var adminURLRE = regexp.MustCompile(`msg="admin listener \(web console and API\)" url=(\S+)`)

// adminURL waits for the admin listener's log line and returns its URL.
func (ls *liveServer) adminURL(t *testing.T) string {
	t.Helper()
	var u string
	waitFor(t, "the admin listener", func() bool {
		m := adminURLRE.FindStringSubmatch(ls.stderr.String())
		if m != nil {
			u = m[1]
		}
		return m != nil
	})
	return u
}

// chromium finds Debian's chromium (contrib/test-peers installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: run contrib/test-peers (it installs Debian's chromium)")
	return ""
}

// TestConsoleInABrowser drives the web console with a real headless
// Chromium: log in, see the overview, find in the history a client the
// policy server refused, open its trace, ban another client and see the
// policy server refuse it, log out. Each page is screenshot.
func TestConsoleInABrowser(t *testing.T) {
	is := is.New(t)
	exe := chromium(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	const password = "a long console password"
	is.NoErr(webauth.AddUser(users, "admin", password, bcrypt.MinCost))
	cfgPath := filepath.Join(dir, "config.toml")
	writeFile(t, filepath.Join(dir, "bl.txt"), "192.0.2.66\n")
	cfgText := strings.Replace(configText(dir, "[admin]\nlisten = \"127.0.0.1:0\"\nusers_file = \"users\"\n"),
		"[log]\n", "[log]\nstore = \"sessions.db\"\n", 1)
	writeFile(t, cfgPath, cfgText)
	ls := startLiveAt(t, cfgPath, dir)
	base := ls.adminURL(t)

	// The policy server refuses 192.0.2.66 (blacklisted) and accepts
	// 198.51.100.23, for now. As an smtpd process does, one connection
	// asks for one message after the other: the next message's request
	// ends the previous one, which is then recorded.
	pc := ls.dial(t)
	is.Equal(pc.rcpt("192.0.2.66", "spam.example", "browser.1", "user@domino.test"), "550 5.7.1 Connection denied based on policy reason")
	is.Equal(pc.rcpt("198.51.100.23", "mx.example", "browser.2", "user@domino.test"), "DUNNO")
	db, err := sessionstore.OpenReader(filepath.Join(dir, "sessions.db"))
	is.NoErr(err)
	defer db.Close()
	waitFor(t, "the refused session in the store", func() bool {
		pg, err := db.Query(context.Background(), sessionstore.Filter{IP: "192.0.2.66"})
		return err == nil && len(pg.Entries) == 1
	})

	shots := []string{t.TempDir()}
	if d := os.Getenv(screenshotsEnv); d != "" {
		shots = append(shots, d)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-gpu", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	location := func() string {
		t.Helper()
		u, err := chromedp.Run(ctx, chromedp.Location())
		is.NoErr(err)
		return u
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		is.NoErr(err)
		for _, d := range shots {
			is.NoErr(os.WriteFile(filepath.Join(d, name+".png"), png, 0o644))
		}
	}

	// A page without a login goes to the login form.
	do("open the overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#username")))
	is.True(strings.Contains(location(), "/login?next="))
	shot("login")
	do("log in",
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#features")))
	is.Equal(text("#user"), "admin")
	is.Equal(text("#version"), buildVersion())
	is.Equal(text("#mode"), "enforce")
	shot("overview")

	do("statistics", chromedp.Navigate(base+"/stats"), chromedp.WaitVisible(chromedp.CSS("#counters")))
	is.True(strings.Contains(text("#counters"), "SMTP.PrivateBL.TotalHits"))
	shot("stats")

	// The history, filtered with its form to the refused client.
	do("filter the history", chromedp.Navigate(base+"/history"),
		chromedp.SendKeys(chromedp.CSS(`input[name="ip"]`), "192.0.2.66"),
		chromedp.Click(chromedp.CSS("#filter")),
		chromedp.WaitVisible(chromedp.CSS("#sessions")))
	is.True(strings.HasSuffix(location(), "/history?ip=192.0.2.66&from=&rcpt=&control=&verdict=&since="))
	rows := text("#sessions tbody")
	is.True(strings.Contains(rows, "192.0.2.66"))
	is.True(strings.Contains(rows, "reject by blacklist"))
	is.True(!strings.Contains(rows, "198.51.100.23"))
	shot("history")
	do("open its trace", chromedp.Click(chromedp.CSS("a.session")), chromedp.WaitVisible(chromedp.CSS("#trace")))
	is.True(strings.Contains(text("#verdict"), "reject"))
	is.True(strings.Contains(text("#trace"), `blacklist entry "192.0.2.66"`))
	shot("session")

	// A ban from the console refuses the client's next policy request.
	do("ban", chromedp.Navigate(base+"/bans"),
		chromedp.SendKeys(chromedp.CSS("#ban-prefix"), "198.51.100.23"),
		chromedp.SendKeys(chromedp.CSS("#ban-for"), "1h"),
		chromedp.SendKeys(chromedp.CSS("#ban-reason"), "seen in the browser test"),
		chromedp.Click(chromedp.CSS("#ban-add")),
		chromedp.WaitVisible(chromedp.CSS("#bans")))
	is.True(strings.Contains(text("#flash"), "banned 198.51.100.23/32"))
	is.True(strings.Contains(text("#bans"), "seen in the browser test"))
	shot("bans")
	is.Equal(ls.ask(t, "198.51.100.23"), "action=550 5.7.1 Your host 198.51.100.23 is banned")

	do("lists", chromedp.Navigate(base+"/lists"), chromedp.WaitVisible(chromedp.CSS("main h2")))
	is.True(strings.Contains(text("main"), "192.0.2.66"))
	shot("lists")
	do("explain", chromedp.Navigate(base+"/explain"),
		chromedp.SendKeys(chromedp.CSS("#x-ip"), "192.0.2.66"),
		chromedp.SendKeys(chromedp.CSS("#x-helo"), "mx.example"),
		chromedp.Click(chromedp.CSS("#explain")),
		chromedp.WaitVisible(chromedp.CSS("#final")))
	is.True(strings.Contains(text("#final"), "reject by blacklist"))
	shot("explain")

	do("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#username")))
	do("the overview again", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#username")))
	is.True(strings.Contains(location(), "/login?next="))
}
