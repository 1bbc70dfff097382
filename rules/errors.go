package rules

import (
	"fmt"
	"strings"
)

// Entry is one configured value of a list together with where it came from,
// so that an error in it can name the key and line.
type Entry struct {
	// Value is the entry as written, surrounding white space removed.
	Value string
	// Key is the configuration key the entry belongs to, e.g. "blacklist.hosts".
	Key string
	// File is the file the entry was read from: the configuration file or a
	// list file named by an *_file key. Empty when unknown.
	File string
	// Line is the 1-based line of the entry in File; 0 when unknown.
	Line int
}

// ConfigError is one problem found while loading a configuration. Loading
// collects every ConfigError before it gives up, so an administrator sees
// all of them at once.
type ConfigError struct {
	// Key is the configuration key at fault, e.g. "dns_blacklist.action".
	Key string
	// File and Line locate the fault where known (Line 0: unknown).
	File string
	Line int
	// Err says what is wrong.
	Err error
}

// Error formats the error as "file:line: key: problem".
func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// errorf builds a ConfigError located at the entry.
func (en Entry) errorf(format string, args ...any) *ConfigError {
	return &ConfigError{Key: en.Key, File: en.File, Line: en.Line, Err: fmt.Errorf(format, args...)}
}
