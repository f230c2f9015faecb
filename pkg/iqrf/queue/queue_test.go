package queue

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func rec(i int) []byte { return []byte(fmt.Sprintf("record-%06d", i)) }

func next(t *testing.T, r *Reader, max int) ([][]byte, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	recs, first, err := r.Next(ctx, max)
	if err != nil {
		t.Fatal(err)
	}
	return recs, first
}

func TestAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, Options{MaxBytes: 1 << 20, SegmentBytes: 200}, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := q.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := q.Reader("a"), q.Reader("b")
	recs, first := next(t, a, 20)
	if len(recs) != 20 || first != 0 || string(recs[19]) != string(rec(19)) {
		t.Fatalf("got %d from %d: %q", len(recs), first, recs[len(recs)-1])
	}
	a.Ack(first + 10)
	a.Rewind()
	recs, first = next(t, a, 5)
	if first != 10 || string(recs[0]) != string(rec(10)) {
		t.Fatalf("after rewind: first %d %q", first, recs[0])
	}
	a.Ack(15)
	recs, first = next(t, b, 100)
	if len(recs) != 50 || first != 0 {
		t.Fatalf("b got %d", len(recs))
	}
	b.Ack(50)
	if a.Pending() != 35 || b.Pending() != 0 {
		t.Errorf("pending %d %d", a.Pending(), b.Pending())
	}
	q.Close()
	// Reopen: the cursors and the records are still there.
	q, err = Open(dir, Options{MaxBytes: 1 << 20, SegmentBytes: 200}, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	a = q.Reader("a")
	recs, first = next(t, a, 100)
	if first != 15 || len(recs) != 35 || string(recs[34]) != string(rec(49)) {
		t.Fatalf("after reopen: first %d, %d records", first, len(recs))
	}
	a.Ack(50)
	// Every reader has everything: only the segment being written is left.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Errorf("%d segments left", len(segs))
	}
	if err := q.Append(rec(50)); err != nil {
		t.Fatal(err)
	}
	recs, first = next(t, q.Reader("b"), 10)
	if first != 50 || string(recs[0]) != string(rec(50)) {
		t.Fatalf("b after reopen: %d %q", first, recs)
	}
}

func TestNextWaitsForAppend(t *testing.T) {
	q, err := Open(t.TempDir(), Options{}, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got := make(chan []byte)
	go func() {
		recs, _, err := q.Reader("a").Next(context.Background(), 10)
		if err == nil {
			got <- recs[0]
		}
		close(got)
	}()
	q.Append([]byte("x"))
	if r := <-got; string(r) != "x" {
		t.Fatalf("got %q", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := q.Reader("a").Next(ctx, 1); err != context.Canceled {
		t.Fatalf("cancelled Next: %v", err)
	}
}

func TestBoundDropsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, Options{MaxBytes: 2000, SegmentBytes: 400}, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := range 1000 {
		if err := q.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if q.Bytes() > 2000+400 {
		t.Errorf("queue holds %d bytes", q.Bytes())
	}
	a := q.Reader("a")
	recs, first := next(t, a, 1000)
	if q.Dropped() != first || first+uint64(len(recs)) != 1000 {
		t.Errorf("dropped %d, first kept %d, kept %d", q.Dropped(), first, len(recs))
	}
	if string(recs[len(recs)-1]) != string(rec(999)) || string(recs[0]) != string(rec(int(first))) {
		t.Errorf("kept records out of order")
	}
}

func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, Options{}, "a")
	for i := range 3 {
		q.Append(rec(i))
	}
	q.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, _ := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{50, 0, 0, 0, 1, 2})
	f.Close()
	q, err := Open(dir, Options{}, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.Append(rec(3))
	recs, _ := next(t, q.Reader("a"), 10)
	if len(recs) != 4 || string(recs[3]) != string(rec(3)) {
		t.Fatalf("records %q", recs)
	}
}
