package main

import (
	"fmt"
	"io"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// loadConfig loads path, or the built-in defaults when path is "". On error
// it prints every problem to stderr.
func loadConfig(path string, stderr io.Writer) (*rules.Config, bool) {
	if path == "" {
		return rules.Default(), true
	}
	cfg, err := rules.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "smtp-interceptor: %v\n", err)
		return nil, false
	}
	return cfg, true
}
