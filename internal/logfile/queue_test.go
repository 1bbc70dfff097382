package logfile

import (
	"strings"
	"testing"

	"github.com/matryer/is"
)

// TestLineQueue drives the queue through writes a destination takes in
// part: each step pushes records, then lets the destination take so many
// bytes, and checks what it got and what still waits.
func TestLineQueue(t *testing.T) {
	type step struct {
		push        []string
		take        int // bytes the destination takes (-1 all)
		wantPushed  int // pushes accepted
		wantDone    int // records completed by this write
		wantRecords int // records waiting after it
		wantCut     bool
	}
	for _, tc := range []struct {
		name  string
		limit int
		steps []step
		want  string // all the destination got
	}{
		{"all at once", 100, []step{
			{[]string{"a\n", "bb\n"}, -1, 2, 2, 0, false},
		}, "a\nbb\n"},
		{"a cut line is resumed at the byte it stopped", 100, []step{
			{[]string{"one\n", "two\n"}, 6, 2, 1, 1, true}, // "tw" written
			{[]string{"three\n"}, 1, 1, 0, 2, true},        // "o": still cut
			{nil, 2, 0, 1, 1, true},                        // "\nt": two done, three cut
			{nil, -1, 0, 1, 0, false},
		}, "one\ntwo\nthree\n"},
		{"nothing taken", 100, []step{
			{[]string{"one\n"}, 0, 1, 0, 1, false},
			{nil, -1, 0, 1, 0, false},
		}, "one\n"},
		{"the missing newline is added", 100, []step{
			{[]string{"no newline", "x\n"}, -1, 2, 2, 0, false},
		}, "no newline\nx\n"},
		{"an empty write is no record", 100, []step{
			{[]string{"", "x\n"}, -1, 2, 1, 0, false},
		}, "x\n"},
		{"a full queue refuses a record whole", 10, []step{
			{[]string{"12345\n", "1234\n", "abcd\n"}, 0, 1, 0, 1, false}, // 6+5 > 10: both refused
			{[]string{"123\n"}, 4, 1, 0, 2, true},                        // the 4 fit; "12345\n" is cut
			{[]string{"abcdefghi\n"}, -1, 0, 2, 0, false},
		}, "12345\n123\n"},
		{"a record larger than the queue", 5, []step{
			{[]string{"123456\n"}, -1, 0, 0, 0, false},
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			q := lineQueue{limit: tc.limit}
			disk := newFakeDisk(0)
			for i, s := range tc.steps {
				pushed := 0
				for _, p := range s.push {
					if q.push([]byte(p)) {
						pushed++
					}
				}
				disk.setSpace(s.take)
				before := q.size()
				done, err := q.writeTo(disk)
				is.Equal(err != nil, s.take >= 0 && s.take < before) // an error when the destination left some
				is.Equal(pushed, s.wantPushed)
				is.Equal(done, s.wantDone)
				is.Equal(q.records, s.wantRecords)
				is.Equal(q.cut, s.wantCut)
				if t.Failed() {
					t.Fatalf("step %d", i)
				}
			}
			is.Equal(disk.String(), tc.want)
		})
	}
}

// TestLineQueueDropCut: the rest of a cut record can be dropped, leaving
// the next record whole at the front.
func TestLineQueueDropCut(t *testing.T) {
	is := is.New(t)
	q := lineQueue{limit: 100}
	q.push([]byte("first\n"))
	q.push([]byte("second\n"))
	disk := newFakeDisk(3)
	q.writeTo(disk)
	is.True(q.cut)
	is.True(q.dropCut())
	is.Equal(q.records, 1)
	is.True(!q.dropCut()) // nothing cut any more
	disk.setSpace(-1)
	q.writeTo(disk)
	is.Equal(disk.String(), "fir"+"second\n") // no other record glued to a cut in the same destination is the File's job (leave)
}

// TestLineQueueCompacts: a queue that keeps a tail after each block
// write moves it to the front instead of growing without bound.
func TestLineQueueCompacts(t *testing.T) {
	is := is.New(t)
	q := lineQueue{limit: DefaultQueueBytes}
	disk := newFakeDisk(-1)
	line := []byte(strings.Repeat("z", 299) + "\n")
	for range 10000 {
		q.push(line)
		if q.size() >= flushBytes {
			_, err := q.writeBlocks(disk)
			is.NoErr(err)
		}
	}
	is.True(cap(q.buf) <= 2*flushBytes+len(line)) // bounded by the blocks, not the traffic
	is.NoErr(func() error { _, err := q.writeTo(disk); return err }())
	is.Equal(len(disk.String()), 10000*len(line))
	is.Equal(q.records, 0)
}
