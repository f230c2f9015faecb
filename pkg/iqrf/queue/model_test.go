package queue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestAgainstModel replays random appends, reads, acknowledgements,
// rewinds and reopenings against a plain in-memory model of two readers.
func TestAgainstModel(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, seed) })
	}
}

type modelReader struct{ acked, pos uint64 }

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	opt := Options{MaxBytes: 1 << 30, SegmentBytes: int64(64 + rng.IntN(512))}
	names := []string{"a", "b"}
	q, err := Open(dir, opt, names...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close() }()
	var tail uint64
	model := map[string]*modelReader{"a": {}, "b": {}}
	payload := func(i uint64) string { return fmt.Sprintf("r%d-%s", i, string(make([]byte, i%17))) }
	for step := range 400 {
		name := names[rng.IntN(2)]
		m := model[name]
		switch op := rng.IntN(10); {
		case op < 4:
			n := 1 + rng.IntN(5)
			for range n {
				if err := q.Append([]byte(payload(tail))); err != nil {
					t.Fatal(err)
				}
				tail++
			}
		case op < 7:
			if m.pos == tail {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			recs, first, err := q.Reader(name).Next(ctx, 1+rng.IntN(8))
			cancel()
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if first != m.pos {
				t.Fatalf("step %d %s: first %d, model %d", step, name, first, m.pos)
			}
			for i, r := range recs {
				if string(r) != payload(first+uint64(i)) {
					t.Fatalf("step %d %s: record %d = %q", step, name, first+uint64(i), r)
				}
			}
			m.pos += uint64(len(recs))
		case op < 8:
			end := m.acked + uint64(rng.IntN(int(m.pos-m.acked)+1))
			q.Reader(name).Ack(end)
			m.acked = end
		case op < 9:
			q.Reader(name).Rewind()
			m.pos = m.acked
		default:
			q.Close()
			if q, err = Open(dir, opt, names...); err != nil {
				t.Fatal(err)
			}
			for _, mr := range model {
				mr.pos = mr.acked
			}
		}
		for _, n := range names {
			if p := q.Reader(n).Pending(); p != tail-model[n].acked {
				t.Fatalf("step %d %s: pending %d, model %d", step, n, p, tail-model[n].acked)
			}
		}
	}
}
