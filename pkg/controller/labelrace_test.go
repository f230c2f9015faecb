package controller

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// beforeGet runs a function (once) before the first Get of a key with the
// given prefix.
type beforeGet struct {
	store.Store
	prefix string
	once   sync.Once
	f      func()
}

func (s *beforeGet) Get(ctx context.Context, key string) (store.KV, error) {
	if strings.HasPrefix(key, s.prefix) {
		s.once.Do(s.f)
	}
	return s.Store.Get(ctx, key)
}

// An agent reports its endpoint's label to each of its controllers at
// once: the same label set on the same endpoint through two controllers
// sharing a store succeeds through both, also when the other controller's
// write lands between this one's read of the endpoint and of the label.
func TestSameLabelThroughTwoControllers(t *testing.T) {
	c1, _ := newCounting(t)
	ctx := context.Background()
	must[*v1.VirtualNetwork](t)(c1.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.0.0.0/16"}}))
	must[*v1.Gateway](t)(c1.CreateGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}))
	must[*v1.Endpoint](t)(c1.CreateEndpoint(ctx, &v1.Endpoint{Id: "ep", Network: "n", Gateway: "gw"}))
	set := &v1.Endpoint{Id: "ep", Mac: "02:00:00:00:00:01", Label: 16}
	c2 := New(&beforeGet{Store: c1.st, prefix: keys.Label("gw", 16), f: func() {
		must[*v1.Endpoint](t)(c1.UpdateEndpoint(ctx, set))
	}}, Config{})
	e, err := c2.UpdateEndpoint(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	if e.GetLabel() != 16 {
		t.Fatalf("label %d, want 16", e.GetLabel())
	}
}
