package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// TestReplay decides testdata/replay/sessions.jsonl (recorded under
// live.toml) again under candidate.toml, whose changes are known: two
// HELO names under .invalid now refused, the blacklisted client accepted,
// the DNS-blacklisted client still refused from the recorded DNS answer
// (no live DNS), the authenticated one unchanged.
func TestReplay(t *testing.T) {
	is := is.New(t)
	dir := filepath.Join("..", "..", "testdata", "replay")
	code, out, stderr := runCmd("replay", "-c", filepath.Join(dir, "candidate.toml"), "--json", filepath.Join(dir, "sessions.jsonl"))
	is.Equal(stderr, "")
	is.Equal(code, 0)
	var rep rules.ReplayReport
	is.NoErr(json.Unmarshal([]byte(out), &rep))
	is.Equal(rep.Sessions, 6)
	is.Equal(rep.Changed, 3)
	is.Equal(len(rep.Groups), 2)
	is.Equal(rep.Groups[0].Change, "accept → reject")
	is.Equal(rep.Groups[0].Control, rules.ControlHelo)
	is.Equal(rep.Groups[0].Entry, "*.invalid")
	is.Equal(rep.Groups[0].Count, 2)
	is.Equal(rep.Groups[1].Change, "reject → accept")
	is.Equal(rep.Groups[1].Control, rules.ControlBlacklist)
	is.Equal(rep.Groups[1].Entry, "192.0.2.66")

	// Under the configuration that recorded them, nothing changes.
	code, out, _ = runCmd("replay", "-c", filepath.Join(dir, "live.toml"), filepath.Join(dir, "sessions.jsonl"))
	is.Equal(code, 0)
	is.True(strings.HasPrefix(out, "6 sessions, 0 would change verdict\n"))

	// A cut line is skipped and said, the rest replayed.
	data, err := os.ReadFile(filepath.Join(dir, "sessions.jsonl"))
	is.NoErr(err)
	cut := filepath.Join(t.TempDir(), "s.jsonl")
	is.NoErr(os.WriteFile(cut, append(data, []byte(`{"time":"2026-12-02T20:22:03Z","sess`)...), 0o600))
	code, out, stderr = runCmd("replay", "-c", filepath.Join(dir, "live.toml"), cut)
	is.Equal(code, 0)
	is.True(strings.Contains(stderr, "1 lines of"))
	is.True(strings.HasPrefix(out, "6 sessions"))

	code, _, _ = runCmd("replay", "-c", filepath.Join(dir, "live.toml"))
	is.Equal(code, exitUsage)
}
