package main

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
)

// gcHeadroom is how much garbage the heap may gather above the live data
// before a collection, once the live data is large. Go's default (GOGC=100)
// lets the heap grow to twice the live data: with a million list entries
// (about 140 MB live) that is 280 MB for nothing.
const gcHeadroom = 64 << 20

// maxGCPercent bounds GOGC for a tiny live heap.
const maxGCPercent = 800

// tuneMemory returns the garbage of a configuration load to the OS and
// sets the collector's pace so the heap may grow gcHeadroom above the
// live data, whatever its size: less than Go's default for a large
// configuration, more for a small one, which would otherwise be collected
// every few megabytes under load (a cold directory lookup allocates some
// 10 KB in go-ldap). An administrator's GOGC or GOMEMLIMIT is left alone.
func tuneMemory(log *slog.Logger) {
	debug.FreeOSMemory()
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pct := min(int(100*gcHeadroom/max(ms.HeapAlloc, 1)), maxGCPercent)
	pct = max(pct, 25)
	if old := debug.SetGCPercent(pct); old != pct {
		log.Debug("garbage collector paced for the configuration", slog.Uint64("live_heap_bytes", ms.HeapAlloc), slog.Int("gogc", pct))
	}
}
