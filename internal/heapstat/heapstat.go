// Package heapstat measures the Go heap for tests and benchmarks that bound
// or print memory per object.
package heapstat

import "runtime"

// Live is the heap in use after two full collections (the second frees what
// finalizers of the first released): the live heap, without garbage.
func Live() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
