package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is the release, when the build sets it:
//
//	go build -ldflags "-X main.version=1.2.0" ./cmd/smtp-interceptor
//
// Without it, the version comes from the build information Go records:
// the module version (a tagged release installed with go install, or the
// pseudo-version go build derives from the checkout), else the VCS
// revision.
var version string

// buildVersion returns the version of this binary.
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return versionOf(bi)
}

// versionOf reads the version from build information: the main module's
// version, else the revision (12 hex digits, "-dirty" when the work tree
// had changes), else "devel".
func versionOf(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// runVersion prints "smtp-interceptor VERSION GOVERSION OS/ARCH", as
// "go version" does.
func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			fmt.Fprintln(stdout, "usage: smtp-interceptor version\n\nprints the version, the Go version it was built with, and the platform")
			return exitOK
		}
		fmt.Fprintf(stderr, "version: unexpected argument %q\n", args[0])
		return exitUsage
	}
	fmt.Fprintf(stdout, "smtp-interceptor %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
