package controller

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// hookStore runs after once, the first time a listing of a key prefix
// starting with prefix returns.
type hookStore struct {
	store.Store
	prefix string
	once   sync.Once
	after  func()
}

func (s *hookStore) hook(prefix string) {
	if strings.HasPrefix(prefix, s.prefix) {
		s.once.Do(s.after)
	}
}

func (s *hookStore) ListPage(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, bool, error) {
	kvs, rev, more, err := s.Store.ListPage(ctx, prefix, after, limit)
	s.hook(prefix)
	return kvs, rev, more, err
}

func (s *hookStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	kvs, rev, err := s.Store.List(ctx, prefix)
	s.hook(prefix)
	return kvs, rev, err
}

// A gateway's endpoints are listed from two indexes read one after the
// other (its labels, then its endpoints without a label). An endpoint that
// gets its label between the two reads is in neither: the listing's
// revision must then be the first read's, so that a watch from it (what the
// console and every API client do after a listing) brings the endpoint.
// With the later read's revision the endpoint was lost until the next
// listing: listed by its network (one index, one read) but not by its
// gateway, until a reload.
func TestListEndpointsByGatewayRevision(t *testing.T) {
	for _, paged := range []bool{true, false} {
		name := map[bool]string{true: "ListEndpointsPage", false: "ListEndpoints"}[paged]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			hs := &hookStore{Store: openBolt(t), prefix: keys.Labels}
			c := New(hs, Config{})
			must[*v1.VirtualNetwork](t)(c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.0.0.0/24"}}))
			must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}))
			must[*v1.Endpoint](t)(c.CreateEndpoint(ctx, &v1.Endpoint{Id: "labelled", Network: "n", Gateway: "gw", Label: 100}))
			must[*v1.Endpoint](t)(c.CreateEndpoint(ctx, &v1.Endpoint{Id: "pod", Network: "n", Gateway: "gw"}))
			// The pod's agent attaches it (gives it a label) right after the
			// labels were read.
			hs.after = func() {
				if _, err := c.UpdateEndpoint(ctx, &v1.Endpoint{Id: "pod", Label: 101}); err != nil {
					t.Error(err)
				}
			}
			var eps []*v1.Endpoint
			var rev int64
			if paged {
				var res PageResult
				var err error
				eps, res, err = c.ListEndpointsPage(ctx, "", "gw", Page{Size: 100})
				if err != nil || res.Next != "" {
					t.Fatalf("list: %v, next %q", err, res.Next)
				}
				rev = res.Revision
			} else {
				var err error
				if eps, rev, err = c.ListEndpoints(ctx, "", "gw"); err != nil {
					t.Fatal(err)
				}
			}
			seen := map[string]bool{}
			for _, e := range eps {
				seen[e.Id] = true
			}
			if !seen["labelled"] {
				t.Fatalf("listing %v lacks the labelled endpoint", seen)
			}
			if seen["pod"] {
				return // listed: as good
			}
			// A watch from the listing's revision brings the pod.
			wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
			defer wcancel()
			for b := range hs.Watch(wctx, keys.Endpoint("pod"), rev) {
				for _, ev := range b.Events {
					if ev.Key == keys.Endpoint("pod") {
						return
					}
				}
			}
			t.Errorf("endpoint pod is neither in the gateway's listing nor in a watch from its revision %d", rev)
		})
	}
}
