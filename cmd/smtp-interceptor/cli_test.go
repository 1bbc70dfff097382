package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// runWithDefault runs a subcommand in-process with -c defaulting to def.
func runWithDefault(ctx context.Context, def string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(ctx, args, env{stdout: &out, stderr: &errb, defaultConfig: def})
	return code, out.String(), errb.String()
}

// TestHelpExitsZero: -h, -help and --help on every command print its usage
// on standard output and exit 0.
func TestHelpExitsZero(t *testing.T) {
	commands := [][]string{{"serve"}, {"check"}, {"explain"}, {"stats"}, {"version"}, {"bench"},
		{"bench", "policy"}, {"bench", "milter"}, {"bench", "null-policy"}, {"bench", "null-milter"}}
	for _, c := range commands {
		for _, h := range []string{"-h", "-help", "--help"} {
			args := append(append([]string{}, c...), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				is := is.New(t)
				code, stdout, stderr := runCmd(args...)
				is.Equal(code, 0)
				is.Equal(stderr, "")
				is.True(strings.HasPrefix(stdout, "usage: smtp-interceptor "+c[0])) // its own usage
			})
		}
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		code, stdout, _ := runCmd(args...)
		is.New(t).Equal(code, 0)
		is.New(t).True(strings.Contains(stdout, "version  print the version"))
	}
	code, stdout, _ := runCmd("help", "check")
	is.New(t).Equal(code, 0)
	is.New(t).True(strings.HasPrefix(stdout, "usage: smtp-interceptor check [-c FILE] [--probe [--probe-rcpt ADDR]]"))
	// A bad flag is still bad usage, on standard error.
	code, stdout, stderr := runCmd("serve", "--nope")
	is.New(t).Equal(code, 2)
	is.New(t).Equal(stdout, "")
	is.New(t).True(strings.Contains(stderr, "flag provided but not defined: -nope"))
	is.New(t).True(strings.Contains(stderr, "usage: smtp-interceptor serve"))
}

// TestDefaultConfigFile: without -c, every command reads the default file
// when it exists and says so when it runs on the built-in defaults.
func TestDefaultConfigFile(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	def := filepath.Join(dir, "config.toml")
	sock := filepath.Join(dir, "policy.sock")
	writeFile(t, def, fmt.Sprintf(`[server]
policy = ["unix:%s"]
milter = []
metrics = ""
[dns]
resolver = "127.0.0.1:1"
[blacklist]
hosts = ["192.0.2.66"]
`, sock))
	ctx := context.Background()

	code, stdout, stderr := runWithDefault(ctx, def, "check")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "configuration "+def+": OK"))
	is.True(strings.Contains(stdout, "blacklist          1 entries"))
	is.Equal(stderr, "") // no note: a file was read

	code, stdout, stderr = runWithDefault(ctx, def, "explain", "--ip", "192.0.2.66")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "[blacklist at connect]")) // the default file's blacklist
	is.Equal(stderr, "")

	// stats reads the default file's [server] metrics: off there.
	code, _, stderr = runWithDefault(ctx, def, "stats")
	is.Equal(code, 2)
	is.True(strings.Contains(stderr, "[server] metrics is off"))

	// serve listens where the default file says.
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() { c, _, _ := runWithDefault(sctx, def, "serve"); done <- c }()
	waitSocket(t, sock)
	is.True(strings.HasPrefix(policyAsk(t, "unix", sock, "192.0.2.66"), "action=550 5.7.1"))
	cancel()
	is.Equal(<-done, 0)

	// -c "" asks for the built-in defaults, and says so.
	code, stdout, stderr = runWithDefault(ctx, def, "check", "-c", "")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "configuration built-in defaults: OK"))
	is.True(strings.Contains(stderr, `check: -c "": using the built-in defaults`))

	// No default file: the built-in defaults, said plainly on stderr.
	missing := filepath.Join(dir, "absent.toml")
	code, stdout, stderr = runWithDefault(ctx, missing, "check")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "configuration built-in defaults: OK"))
	is.Equal(stderr, "check: no -c and no "+missing+": using the built-in defaults (the values config.toml.example shows)\n")
	code, stdout, stderr = runWithDefault(ctx, missing, "explain", "--ip", "192.0.2.66")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "result:  accept"))
	is.True(strings.Contains(stderr, "explain: no -c and no "+missing+": using the built-in defaults"))

	// A default that exists but cannot be read is named, not skipped.
	code, _, stderr = runWithDefault(ctx, dir, "check")
	is.Equal(code, 2)
	is.True(strings.Contains(stderr, dir))
}

// TestBenchFlagsAndWarning: the connection count is --conns, -c says so,
// and a run warns that the load lands in the server's logs and counters.
func TestBenchFlagsAndWarning(t *testing.T) {
	is := is.New(t)
	for _, args := range [][]string{{"-c", "4"}, {"-c=4"}, {"--c", "4"}} {
		code, _, stderr := runCmd(append([]string{"bench", "policy", "--addr", "unix:/nonexistent.sock"}, args...)...)
		is.Equal(code, 2)
		is.True(strings.Contains(stderr, "the connection count is --conns")) // a hint, not just "not defined"
	}
	code, _, stderr := runCmd("bench", "policy", "--conns", "0")
	is.Equal(code, 2)
	is.True(strings.Contains(stderr, "need --conns >= 1"))

	sock := filepath.Join(t.TempDir(), "null.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		c, _, _ := runWithDefault(ctx, noDefaultConfig, "bench", "null-policy", "--listen", "unix:"+sock)
		done <- c
	}()
	waitSocket(t, sock)
	code, stdout, stderr := runCmd("bench", "policy", "--addr", "unix:"+sock, "--conns", "3", "-n", "30")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "bench policy unix:"+sock+": 3 connections"))
	is.True(strings.Contains(stderr, "warning: unix:"+sock+" decides, logs and counts this load as real traffic"))
	is.True(strings.Contains(stderr, "Do not point bench at a production server"))
	is.True(!strings.Contains(stdout, "warning")) // the report stays clean for scripts
	cancel()
	is.Equal(<-done, 0)
}

var versionLineRE = regexp.MustCompile(`^smtp-interceptor (\S+) (go\S+) (\S+)/(\S+)\n$`)

func TestVersion(t *testing.T) {
	is := is.New(t)
	for _, arg := range []string{"version", "--version", "-version"} {
		code, stdout, stderr := runCmd(arg)
		is.Equal(code, 0)
		is.Equal(stderr, "")
		m := versionLineRE.FindStringSubmatch(stdout)
		is.True(m != nil) // smtp-interceptor VERSION GOVERSION OS/ARCH
		is.Equal(m[2], runtime.Version())
		is.Equal(m[3], runtime.GOOS)
		is.Equal(m[4], runtime.GOARCH)
	}
	code, _, stderr := runCmd("version", "extra")
	is.Equal(code, 2)
	is.True(strings.Contains(stderr, `unexpected argument "extra"`))
}

func TestVersionOf(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "4634bd0da3165b9e5dd08f84500b96453179cb97"}}
	for _, tt := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"a release", debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}, Settings: rev}, "v1.2.0"},
		{"a pseudo-version", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202194228-4634bd0da316"}}, "v0.0.0-20261202194228-4634bd0da316"},
		{"a checkout", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, "4634bd0da316"},
		{"a modified checkout", debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: append(rev[:2:2], debug.BuildSetting{Key: "vcs.modified", Value: "true"})}, "4634bd0da316-dirty"},
		{"nothing known", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is.New(t).Equal(versionOf(&tt.bi), tt.want)
		})
	}
}

// TestVersionLdflags: a build that sets main.version prints it.
func TestVersionLdflags(t *testing.T) {
	is := is.New(t)
	bin := filepath.Join(t.TempDir(), "smtp-interceptor")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version=1.2.3-test", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).Output()
		is.NoErr(err)
		is.Equal(string(out), fmt.Sprintf("smtp-interceptor 1.2.3-test %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH))
	}
}
