// Package routedigest is the one definition, shared by the controller and the
// agent, of a digest of the routes of a network: the routes are split into
// buckets by key (prefix and route distinguisher), and each bucket's digest
// is the XOR of its routes' hashes, so it can be kept up to date route by
// route and compared without sending the routes. A reconnecting agent that
// cannot resume from a revision sends the digests of what it holds; the
// controller sends only the buckets that differ.
//
// The hash of a route is FNV-1a (64 bits) of its deterministic protobuf
// encoding: both ends hash the same message the controller sent.
package routedigest

import (
	"hash/fnv"
	"math/bits"

	"google.golang.org/protobuf/proto"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// MaxBuckets bounds the buckets of one network's digest (8 bytes each).
const MaxBuckets = 4096

// routesPerBucket is the number of routes a bucket holds on average: what a
// differing bucket costs to resend.
const routesPerBucket = 32

// BucketsFor returns the number of buckets for a network of count routes: a
// power of two, at least 1, at most MaxBuckets.
func BucketsFor(count int) int {
	n := count / routesPerBucket
	if n <= 1 {
		return 1
	}
	b := 1 << bits.Len(uint(n-1))
	return min(b, MaxBuckets)
}

// Valid reports whether n is a bucket count both ends accept.
func Valid(n int) bool { return n >= 1 && n <= MaxBuckets && n&(n-1) == 0 }

// Bucket returns the bucket of a route key among n (a valid count).
func Bucket(prefix, rd string, n int) int {
	h := fnv.New64a()
	h.Write([]byte(prefix))
	h.Write([]byte{0})
	h.Write([]byte(rd))
	return int(h.Sum64() & uint64(n-1))
}

// Hash returns the hash of a route (its whole content).
func Hash(r *v1.Route) uint64 {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return 0
	}
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// Digest is the digest of one network's routes.
type Digest struct {
	Count   int
	Buckets []uint64 // a valid number of buckets
}

// New returns the empty digest with n buckets.
func New(n int) Digest { return Digest{Buckets: make([]uint64, n)} }

// Add adds (or, called again with the same route, removes) a route given its
// key and hash.
func (d *Digest) Add(prefix, rd string, hash uint64, sign int) {
	d.Buckets[Bucket(prefix, rd, len(d.Buckets))] ^= hash
	d.Count += sign
}

// Of returns the digest of routes with the bucket count BucketsFor gives.
func Of(routes []*v1.Route) Digest {
	d := New(BucketsFor(len(routes)))
	for _, r := range routes {
		d.Add(r.GetPrefix(), r.GetRouteDistinguisher(), Hash(r), 1)
	}
	return d
}
