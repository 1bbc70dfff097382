package rules

import (
	"sync/atomic"
	"time"
)

// directoryResults are the results directory lookups are counted by, in
// index order.
var directoryResults = [...]DirectoryResult{DirectoryFound, DirectoryUnknown, DirectoryAmbiguous,
	DirectoryGroup, DirectoryError, DirectoryCached}

// directoryCounters count [recipients] verify's lookups.
type directoryCounters struct {
	lookups [len(directoryResults)]atomic.Uint64
	latency Histogram
	// state is 0 with no directory configured, 1 reachable, 2 not.
	state atomic.Int32
}

// ObserveDirectoryLookup counts one directory lookup by its result (a
// cache hit as DirectoryCached) and records its latency. The directory
// client calls it (directory.Options.Observe).
func (c *Counters) ObserveDirectoryLookup(result DirectoryResult, d time.Duration) {
	for i, r := range directoryResults {
		if r == result {
			c.directory.lookups[i].Add(1)
			break
		}
	}
	c.directory.latency.Observe(d)
}

// SetDirectoryUp records whether the directory answers
// (directory.Options.OnUp); a configured directory starts up.
func (c *Counters) SetDirectoryUp(up bool) {
	if up {
		c.directory.state.Store(1)
	} else {
		c.directory.state.Store(2)
	}
}

// NoDirectory records that no directory is configured (at start, or after
// a reload removed [directory]): directory_up is not reported.
func (c *Counters) NoDirectory() { c.directory.state.Store(0) }

// DirectorySnapshot is the directory lookups' counters.
type DirectorySnapshot struct {
	// Up says the directory answers.
	Up bool `json:"up"`
	// Lookups counts lookups by result: found, unknown, ambiguous, group,
	// error, and cached for a cache hit.
	Lookups map[string]uint64 `json:"lookups"`
	// Latency is the time lookups took, cache hits included.
	Latency HistogramSnapshot `json:"latency"`
}

// directorySnapshot copies the directory counters; nil when no directory
// is configured.
func (c *Counters) directorySnapshot() *DirectorySnapshot {
	state := c.directory.state.Load()
	if state == 0 {
		return nil
	}
	s := &DirectorySnapshot{Up: state == 1, Lookups: make(map[string]uint64, len(directoryResults)), Latency: c.directory.latency.snapshot()}
	for i, r := range directoryResults {
		s.Lookups[string(r)] = c.directory.lookups[i].Load()
	}
	return s
}
