package gobgp_test

import (
	"context"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
)

// BenchmarkAnnounce100k: 100,000 routes into a speaker without peers (the
// speaker's own share of the end-to-end time).
func BenchmarkAnnounce100k(b *testing.B) {
	routes := generateRoutes(100000)
	for b.Loop() {
		s, err := gobgp.New(bgp.Config{ASN: asn, RouterID: mustAddr("10.0.0.1"), ListenPort: -1}, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		if err := s.Start(ctx, nil); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := s.Announce(ctx, routes); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/100k")
		s.Stop(ctx)
	}
}
