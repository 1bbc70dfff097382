package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// transcript is one scenario file of testdata/policy.
type transcript struct {
	config string
	dns    []dnsEntry
	steps  []transcriptStep
}

type dnsEntry struct {
	zone, txt string
	ip, ans   netip.Addr
}

type transcriptStep struct {
	newConn bool
	request string
	want    string // action, or "CLOSE"
	line    int
}

func parseTranscript(t *testing.T, path string) transcript {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tr transcript
	var cfg []string
	inConfig, inHeader := false, true
	var cur *transcriptStep
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "---"):
			inHeader, inConfig = false, false
			tr.steps = append(tr.steps, transcriptStep{newConn: strings.Contains(line, "new connection") || len(tr.steps) == 0, line: i + 1})
			cur = &tr.steps[len(tr.steps)-1]
		case inHeader && strings.HasPrefix(line, "config:"):
			inConfig = true
		case inHeader && strings.HasPrefix(line, "dns "):
			inConfig = false
			f := strings.SplitN(line, " ", 5)
			if len(f) < 4 {
				t.Fatalf("%s:%d: dns ZONE IP ANSWER [TXT]", path, i+1)
			}
			e := dnsEntry{zone: f[1], ip: netip.MustParseAddr(f[2]), ans: netip.MustParseAddr(f[3])}
			if len(f) == 5 {
				e.txt = f[4]
			}
			tr.dns = append(tr.dns, e)
		case inConfig:
			cfg = append(cfg, line)
		case inHeader, strings.HasPrefix(line, "#"), strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "=> "):
			cur.want = strings.TrimPrefix(line, "=> ")
		default:
			cur.request += line + "\n"
		}
	}
	tr.config = strings.Join(cfg, "\n")
	return tr
}

// TestTranscripts replays every testdata/policy transcript against the
// real server, over TCP and over a unix socket.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "policy", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, network := range []string{"tcp", "unix"} {
		for _, f := range files {
			t.Run(network+"/"+strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
				is := is.New(t)
				tr := parseTranscript(t, f)
				ts := startServer(t, network, tr.config)
				for _, d := range tr.dns {
					ts.dns.Set(d.zone, d.ip, d.txt, d.ans)
				}
				var c *client
				for _, st := range tr.steps {
					if st.newConn || c == nil {
						c = ts.dial(t)
					}
					got, err := c.send(st.request)
					if st.want == "CLOSE" {
						is.True(err != nil) // no reply, connection closed
						c = nil
						continue
					}
					if err != nil {
						t.Fatalf("%s:%d: %v", f, st.line, err)
					}
					if got != st.want {
						t.Errorf("%s:%d: got action %q, want %q", f, st.line, got, st.want)
					}
				}
			})
		}
	}
}
