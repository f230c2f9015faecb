package etcd

import (
	"context"
	"fmt"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	"github.com/iotfabric/iotfabric/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t)
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++ // each subtest gets its own namespace on the shared server
		s, err := Open(context.Background(), Options{Endpoints: []string{srv.Endpoint}, Namespace: fmt.Sprintf("/t%d/", n)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestUnreachableEtcd(t *testing.T) {
	_, err := Open(context.Background(), Options{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 300e6})
	if err == nil {
		t.Fatal("Open of an unreachable etcd succeeded")
	}
}
