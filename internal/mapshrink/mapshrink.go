// Package mapshrink gives back the room of a Go map that has shrunk: Go maps
// keep the room of deleted entries, so a map that once held a flood of
// routes holds its peak size until it is built again.
package mapshrink

// Floor is the least peak, in entries, for which a map is built again.
const Floor = 1024

// Shrink returns m, or a copy of it sized for its entries when it holds
// less than a quarter of peak (and peak is at least Floor), with the peak
// to track from then on. The copy costs one pass over the entries left,
// amortised by the deletions that made the map shrink.
func Shrink[K comparable, V any](m map[K]V, peak int) (map[K]V, int) {
	if peak < Floor || len(m) >= peak/4 {
		return m, peak
	}
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c, len(c)
}
