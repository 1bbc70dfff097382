package state

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// RouteLibraryLog sends go-redis's own log lines (every failed dial, on
// every retry) to log at debug level, instead of the standard library's
// log package on standard error: the backend already warns once when
// Redis goes and once a minute while it stays away. go-redis keeps its
// logger in a package variable: this sets it for the whole process, so
// serve and the commands call it once, at start.
func RouteLibraryLog(log *slog.Logger) {
	redis.SetLogger(libraryLog{log})
}

type libraryLog struct{ log *slog.Logger }

func (l libraryLog) Printf(ctx context.Context, format string, v ...any) {
	if l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.Debug("redis library", slog.String("detail", fmt.Sprintf(format, v...)))
	}
}
