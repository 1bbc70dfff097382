package main

import (
	"io"
	"log/slog"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// newLogger builds the process logger of [log] level and format.
func newLogger(w io.Writer, cfg rules.LogConfig) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(cfg.Level)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}
