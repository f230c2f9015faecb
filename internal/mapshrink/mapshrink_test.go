package mapshrink

import "testing"

func TestShrink(t *testing.T) {
	m := map[int]int{}
	for i := range 4000 {
		m[i] = i
	}
	peak := len(m)
	for i := range 3500 {
		delete(m, i)
	}
	got, p := Shrink(m, peak)
	if len(got) != 500 || p != 500 {
		t.Fatalf("built again: %d entries, peak %d; want 500, 500", len(got), p)
	}
	for i := 3500; i < 4000; i++ {
		if got[i] != i {
			t.Fatalf("entry %d lost", i)
		}
	}
	// A quarter or more of the peak, or a peak under Floor: kept as it is.
	for _, c := range []struct{ n, peak int }{{1000, 4000}, {100, Floor - 1}} {
		m := map[int]int{}
		for i := range c.n {
			m[i] = i
		}
		if _, p := Shrink(m, c.peak); p != c.peak {
			t.Fatalf("%d entries of a peak of %d: built again", c.n, c.peak)
		}
	}
}
