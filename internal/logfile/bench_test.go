package logfile

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
)

// benchLine is one 300-byte record, about a session-log line.
var benchLine = append(bytes.Repeat([]byte("x"), 299), '\n')

// BenchmarkFileWrite measures File.Write of one 300-byte line per op, to a
// real file and to a writer that discards ("-" over io.Discard).
func BenchmarkFileWrite(b *testing.B) {
	for _, bc := range []struct {
		name     string
		parallel bool
		path     func(b *testing.B) string
	}{
		{"file", false, func(b *testing.B) string { return filepath.Join(b.TempDir(), "bench.log") }},
		{"file-parallel", true, func(b *testing.B) string { return filepath.Join(b.TempDir(), "bench.log") }},
		{"discard", false, func(*testing.B) string { return "-" }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := New(bc.path(b), io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			b.SetBytes(int64(len(benchLine)))
			if bc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						l.Write(benchLine)
					}
				})
				return
			}
			for b.Loop() {
				l.Write(benchLine)
			}
		})
	}
}
