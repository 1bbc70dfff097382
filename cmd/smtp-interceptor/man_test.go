package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/matryer/is"
)

var manDir = filepath.Join("..", "..", "contrib", "man")

// manSections splits a man page into its .SS subsections, by title
// (quotes removed), each up to the next .SS or .SH.
func manSections(t *testing.T, page string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(manDir, page))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	title := ""
	var body strings.Builder
	flush := func() {
		if title != "" {
			out[title] = body.String()
		}
		body.Reset()
	}
	for line := range strings.Lines(string(b)) {
		switch {
		case strings.HasPrefix(line, ".SS "):
			flush()
			title = strings.Trim(strings.TrimSpace(line[4:]), `"`)
		case strings.HasPrefix(line, ".SH "):
			flush()
			title = ""
		default:
			body.WriteString(line)
		}
	}
	flush()
	return out
}

// tagged returns the names that begin the tag lines (after .TP or .TQ) of
// a section, "\-" read as "-": the keys or flags it describes.
func tagged(section string, re *regexp.Regexp) []string {
	var names []string
	for _, m := range re.FindAllStringSubmatch(section, -1) {
		names = append(names, strings.ReplaceAll(m[1], `\-`, "-"))
	}
	slices.Sort(names)
	return names
}

var (
	manKeyRE  = regexp.MustCompile(`(?m)^\.T[PQ]\n\.B (\w+)\n`)
	manFlagRE = regexp.MustCompile(`(?m)^\.T[PQ]\n\.BI? \\-(?:\\-)?((?:[a-z]|\\-)+)\b`)
	// the sections and keys of config.toml.example
	exampleSectionRE = regexp.MustCompile(`^\[(\w+)\]$`)
	exampleKeyRE     = regexp.MustCompile(`^(\w+)\s*=`)
	usageCommandRE   = regexp.MustCompile(`(?m)^  ([a-z-]+)  `)
	helpFlagRE       = regexp.MustCompile(`(?m)^  -(\S+)`)
)

// TestConfigManPage: smtp-interceptor.toml(5) describes every section and
// key of config.toml.example, each under its own section, and no key the
// example does not have.
func TestConfigManPage(t *testing.T) {
	is := is.New(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "config.toml.example"))
	is.NoErr(err)
	want := map[string][]string{}
	section := ""
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if m := exampleSectionRE.FindStringSubmatch(line); m != nil {
			section = m[1]
			want[section] = nil
		} else if m := exampleKeyRE.FindStringSubmatch(line); m != nil {
			is.True(section != "") // keys are in sections
			want[section] = append(want[section], m[1])
		}
	}
	is.True(len(want) >= 14) // the example was read
	man := manSections(t, "smtp-interceptor.toml.5")
	documented := 0
	for title, body := range man {
		name, ok := strings.CutPrefix(title, "[")
		if !ok {
			continue // prose subsections: "Host lists", ...
		}
		name = strings.TrimSuffix(name, "]")
		keys, ok := want[name]
		if !ok {
			t.Errorf("smtp-interceptor.toml.5 describes [%s], which config.toml.example does not have", name)
			continue
		}
		documented++
		slices.Sort(keys)
		if got := tagged(body, manKeyRE); !slices.Equal(got, keys) {
			t.Errorf("[%s]: smtp-interceptor.toml.5 describes %v, config.toml.example has %v", name, got, keys)
		}
	}
	if documented != len(want) {
		for name := range want {
			if _, ok := man["["+name+"]"]; !ok {
				t.Errorf("smtp-interceptor.toml.5 has no .SS [%s]", name)
			}
		}
	}
}

// commandSections maps each command ("check", "bench policy") to its
// section of smtp-interceptor(8): a title names one or more commands,
// separated by ", ".
func commandSections(t *testing.T) map[string]string {
	out := map[string]string{}
	for title, body := range manSections(t, "smtp-interceptor.8") {
		for name := range strings.SplitSeq(title, ", ") {
			out[name] = body
		}
	}
	return out
}

// TestCommandManPage: smtp-interceptor(8) has a section for every command
// the usage lists (and each bench target), describing exactly the flags
// the command's -h prints.
func TestCommandManPage(t *testing.T) {
	is := is.New(t)
	var commands []string
	for _, m := range usageCommandRE.FindAllStringSubmatch(usage, -1) {
		if m[1] == "bench" {
			for _, target := range []string{"policy", "milter", "null-policy", "null-milter"} {
				is.True(strings.Contains(benchUsage, target)) // a target bench has
				commands = append(commands, "bench "+target)
			}
			continue
		}
		commands = append(commands, m[1])
	}
	is.True(len(commands) >= 9) // serve check explain stats version, four bench targets
	man := commandSections(t)
	for _, c := range commands {
		body, ok := man[c]
		if !ok {
			t.Errorf("smtp-interceptor.8 has no section for %q", c)
			continue
		}
		code, help, stderr := runCmd(append(strings.Fields(c), "-h")...)
		is.Equal(code, 0)
		is.Equal(stderr, "")
		var flags []string
		for _, m := range helpFlagRE.FindAllStringSubmatch(help, -1) {
			flags = append(flags, m[1])
		}
		slices.Sort(flags)
		if got := tagged(body, manFlagRE); !slices.Equal(got, flags) {
			t.Errorf("%s: smtp-interceptor.8 describes the flags %v, -h prints %v", c, got, flags)
		}
	}
	for title := range man {
		if !slices.Contains(commands, title) {
			t.Errorf("smtp-interceptor.8 has a section %q for no command", title)
		}
	}
}
