package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// BenchmarkCreateEndpoints creates b.N endpoints with one bulk call (bbolt,
// fsync on) and reports endpoints per second.
func BenchmarkCreateEndpoints(b *testing.B) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := New(st, Config{})
	ctx := context.Background()
	if _, err := c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.64.0.0/10"}}); err != nil {
		b.Fatal(err)
	}
	for g := 0; g < 50; g++ {
		c.CreateGateway(ctx, &v1.Gateway{Name: fmt.Sprint("gw", g), UnderlayAddress: fmt.Sprintf("192.0.2.%d", g+1)})
	}
	reqs := make([]*v1.Endpoint, b.N)
	for i := range reqs {
		reqs[i] = &v1.Endpoint{Id: fmt.Sprint("ep", i), Network: "n", Gateway: fmt.Sprint("gw", i%50), Label: uint32(16 + i/50)}
	}
	b.ResetTimer()
	_, errs := c.CreateEndpoints(ctx, reqs)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "endpoints/s")
}
