package state

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

func openMemory(t *testing.T, o MemoryOptions) *Memory {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testutil.Logger(t)
	}
	m, err := OpenMemory(o)
	if err != nil {
		t.Fatalf("OpenMemory: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestMemoryPersistence(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	clk := newFakeClock()
	file := filepath.Join(t.TempDir(), "bans.db")
	m := openMemory(t, MemoryOptions{File: file, Now: clk.Now})
	is.NoErr(m.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Reason: "kept",
		Creator: "admin@relay-a", Refusals: []string{"550 x"}}))
	is.NoErr(m.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("2001:db8::/48"), Reason: "expires",
		Expires: clk.Now().Add(time.Hour)}))
	is.NoErr(m.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: "removed"}))
	removed, err := m.RemoveBan(ctx, netip.MustParsePrefix("198.51.100.0/24"))
	is.NoErr(err)
	is.True(removed)
	want := m.Bans()
	is.Equal(len(want), 2)
	is.NoErr(m.Close())
	is.NoErr(m.Close()) // twice is harmless

	m = openMemory(t, MemoryOptions{File: file, Now: clk.Now})
	got := m.Bans()
	is.Equal(len(got), len(want))
	for i := range got {
		is.True(got[i].equal(&want[i])) // survives a restart, removal included
	}
	is.NoErr(m.Close())

	clk.Advance(2 * time.Hour)
	m = openMemory(t, MemoryOptions{File: file, Now: clk.Now})
	bans := m.Bans()
	is.Equal(len(bans), 1) // the expired ban is dropped on load...
	is.Equal(bans[0].Reason, "kept")
	is.NoErr(m.Close())

	db, err := bolt.Open(file, 0o600, &bolt.Options{Timeout: time.Second})
	is.NoErr(err)
	defer db.Close()
	is.NoErr(db.View(func(tx *bolt.Tx) error {
		is.Equal(tx.Bucket(banBucket).Stats().KeyN, 1) // ...and from the file
		return nil
	}))
}

func TestMemoryWithoutFile(t *testing.T) {
	is := is.New(t)
	m := openMemory(t, MemoryOptions{})
	is.NoErr(m.AddBan(context.Background(), Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))
	_, ok := m.Banned(netip.MustParseAddr("192.0.2.1"))
	is.True(ok)
	is.NoErr(m.Close())
}

// writeBans makes a valid ban file with n bans and returns its bytes.
func writeBans(t *testing.T, file string, n int) []byte {
	t.Helper()
	m := openMemory(t, MemoryOptions{File: file})
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		if err := m.AddBan(context.Background(), Ban{Prefix: p, Reason: strings.Repeat("r", 200)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMemoryUnreadableFile: whatever is wrong with the file, the backend
// opens, logs an error, moves the file aside and starts empty.
func TestMemoryUnreadableFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(valid []byte) []byte
	}{
		{"not a bbolt file", func([]byte) []byte { return bytes.Repeat([]byte("garbage "), 2048) }},
		{"too short", func([]byte) []byte { return []byte("x") }},
		{"half written", func(v []byte) []byte { return v[:len(v)/2] }},
		{"meta pages overwritten", func(v []byte) []byte {
			v = bytes.Clone(v)
			copy(v, bytes.Repeat([]byte{0xA5}, 2*os.Getpagesize()))
			return v
		}},
		{"data pages overwritten", func(v []byte) []byte {
			v = bytes.Clone(v)
			for i := 2 * os.Getpagesize(); i < len(v); i++ {
				v[i] = byte(i*7 + 3)
			}
			return v
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			file := filepath.Join(dir, "bans.db")
			bad := tc.damage(writeBans(t, file, 300))
			is.NoErr(os.WriteFile(file, bad, 0o600))

			log, rec := newRecorder(t)
			m := openMemory(t, MemoryOptions{File: file, Logger: log})
			is.Equal(rec.count(slog.LevelError, "state file unreadable"), 1)
			is.Equal(len(m.Bans()), 0)
			aside, err := filepath.Glob(file + ".corrupt-*")
			is.NoErr(err)
			is.Equal(len(aside), 1)
			kept, err := os.ReadFile(aside[0])
			is.NoErr(err)
			is.True(bytes.Equal(kept, bad)) // moved aside as it was

			// The new file works and persists.
			is.NoErr(m.AddBan(context.Background(), Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))
			is.NoErr(m.Close())
			m = openMemory(t, MemoryOptions{File: file, Logger: log})
			is.Equal(len(m.Bans()), 1)
			is.Equal(rec.count(slog.LevelError, "state file unreadable"), 1)
		})
	}
}

// TestMemoryBadRecord: a record that does not decode is dropped with an
// error, the others kept.
func TestMemoryBadRecord(t *testing.T) {
	is := is.New(t)
	file := filepath.Join(t.TempDir(), "bans.db")
	writeBans(t, file, 2)
	db, err := bolt.Open(file, 0o600, &bolt.Options{Timeout: time.Second})
	is.NoErr(err)
	is.NoErr(db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(banBucket).Put([]byte("192.0.2.0/24"), []byte("{not json"))
	}))
	is.NoErr(db.Close())

	log, rec := newRecorder(t)
	m := openMemory(t, MemoryOptions{File: file, Logger: log})
	is.Equal(len(m.Bans()), 2)
	is.Equal(rec.count(slog.LevelError, "state file: dropping unreadable ban"), 1)
	is.Equal(rec.count(slog.LevelError, "state file unreadable"), 0) // not moved aside
	is.NoErr(m.Close())
	m = openMemory(t, MemoryOptions{File: file, Logger: log})
	is.Equal(len(m.Bans()), 2)
	is.Equal(rec.count(slog.LevelError, "state file: dropping unreadable ban"), 1) // gone for good
}

// TestMemoryLocked: a second process (here a second open) on the same
// file gets a clear error, not a hang.
func TestMemoryLocked(t *testing.T) {
	is := is.New(t)
	file := filepath.Join(t.TempDir(), "bans.db")
	openMemory(t, MemoryOptions{File: file})
	start := time.Now()
	_, err := OpenMemory(MemoryOptions{File: file, Logger: testutil.Logger(t)})
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "locked by another process"))
	is.True(time.Since(start) < 20*lockTimeout) // bounded, not a hang
	matches, _ := filepath.Glob(file + ".corrupt-*")
	is.Equal(len(matches), 0) // a locked file is not corrupt
}

func TestMemoryUnopenableFile(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	_, err := OpenMemory(MemoryOptions{File: filepath.Join(dir, "missing", "bans.db"), Logger: testutil.Logger(t)})
	is.True(err != nil) // reported, not "moved aside"
	matches, _ := filepath.Glob(filepath.Join(dir, "missing", "*"))
	is.Equal(len(matches), 0)
}

// TestMemorySweep: what expires is swept, so memory stays bounded by what
// is live.
func TestMemorySweep(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	clk := newFakeClock()
	file := filepath.Join(t.TempDir(), "bans.db")
	m := openMemory(t, MemoryOptions{File: file, Now: clk.Now})
	for i := range 100 {
		key := fmt.Sprintf("k%d", i)
		_, _, err := m.CountRefusal(ctx, key, time.Minute, "d")
		is.NoErr(err)
		_, err = m.Allow(ctx, key, 10, time.Minute, 1)
		is.NoErr(err)
		is.NoErr(m.PublishStats(ctx, key, []byte("x"), time.Minute))
		is.NoErr(m.AddBan(ctx, Ban{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32),
			Expires: clk.Now().Add(time.Minute)}))
	}
	is.NoErr(m.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))
	_, _, err := m.CountRefusal(ctx, "long", time.Hour, "d")
	is.NoErr(err)

	m.sweep()
	bans, refusals, rates, stats := m.sizes()
	is.Equal([]int{bans, refusals, rates, stats}, []int{101, 101, 100, 100}) // nothing expired yet

	clk.Advance(time.Minute)
	m.sweep()
	bans, refusals, rates, stats = m.sizes()
	is.Equal([]int{bans, refusals, rates, stats}, []int{1, 1, 0, 0})
	is.NoErr(m.Close())

	m = openMemory(t, MemoryOptions{File: file, Now: clk.Now})
	is.Equal(len(m.Bans()), 1) // swept from the file too
}

func TestMemoryRefusalCap(t *testing.T) {
	is := is.New(t)
	m := openMemory(t, MemoryOptions{})
	var n int
	var recent []string
	for i := range maxRefusals + 5 {
		var err error
		n, recent, err = m.CountRefusal(context.Background(), "flood", time.Hour, fmt.Sprint(i))
		is.NoErr(err)
	}
	is.Equal(n, maxRefusals) // saturates
	is.Equal(recent[len(recent)-1], fmt.Sprint(maxRefusals+4))
}

func TestMemoryCanceledContext(t *testing.T) {
	is := is.New(t)
	m := openMemory(t, MemoryOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	is.True(m.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}) != nil)
	_, err := m.Allow(ctx, "k", 1, time.Second, 1)
	is.True(err != nil)
}

// TestMemoryDamagedFiles: a valid file cut at many lengths, or with spans
// of it overwritten, never stops OpenMemory: it loads what it can read or
// moves the file aside, and the backend works.
func TestMemoryDamagedFiles(t *testing.T) {
	dir := t.TempDir()
	valid := writeBans(t, filepath.Join(dir, "valid.db"), 300)
	rnd := rand.New(rand.NewPCG(3, 4))
	var variants [][]byte
	for i := 1; i < 24; i++ {
		variants = append(variants, valid[:len(valid)*i/24])
	}
	for range 24 {
		v := bytes.Clone(valid)
		at := rnd.IntN(len(v) - 64)
		for j := range 64 {
			v[at+j] = byte(rnd.UintN(256))
		}
		variants = append(variants, v)
	}
	for i, v := range variants {
		is := is.New(t)
		file := filepath.Join(dir, fmt.Sprintf("v%d.db", i))
		is.NoErr(os.WriteFile(file, v, 0o600))
		m, err := OpenMemory(MemoryOptions{File: file, Logger: slog.New(slog.DiscardHandler)})
		is.NoErr(err)
		is.True(len(m.Bans()) <= 300)
		is.NoErr(m.AddBan(context.Background(), Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))
		is.NoErr(m.Close())
	}
}

// TestRouteLibraryLog: go-redis's own lines go to the logger given, at
// debug level.
func TestRouteLibraryLog(t *testing.T) {
	var buf testutil.SyncBuffer
	RouteLibraryLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer RouteLibraryLog(slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := redis.NewClient(&redis.Options{Addr: dead, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	_ = c.Ping(context.Background()).Err()
	if !strings.Contains(buf.String(), `level=DEBUG msg="redis library" detail=`) || !strings.Contains(buf.String(), dead) {
		t.Fatalf("go-redis's dial failure was not routed: %q", buf.String())
	}
}
